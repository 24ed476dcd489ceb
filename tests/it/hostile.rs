//! Hostile input: property-based tests of spec validation, the JSON mapping, page tokens, ids and
//! labels, over the library and over a running server; and SQL injection attempts.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use prost::Message;
use spec_provider::domain::validate::{ValidationRules, validate_labels, validate_spec};
use spec_provider::domain::{Labels, PageToken, SpecId, is_id_prefix};
use spec_provider::proto::registryfacade::content_layer::Spec as LayerSpec;
use spec_provider::proto::registryfacade::{
    ContentLayer, GetImageSpecRequest, ImageSpec, RemoteContentLayer,
};
use spec_provider::proto::specprovider::v1::{
    GetSpecRequest, ListSpecsRequest, PutSpecRequest, SpecView,
};
use tonic::Code;

use crate::app::{TestApp, spawn_app};
use crate::db::Backend;
use crate::fixtures::{direct_layer, full_spec, labels, put};

on_both_backends!(sql_injection_through_ids_prefixes_and_labels_changes_nothing);

const MEDIA_TYPES: [&str; 4] = [
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
];

fn rules() -> ValidationRules {
    ValidationRules {
        allow_http_urls: false,
        max_spec_bytes: 1024 * 1024,
    }
}

fn config(cases: u32) -> Config {
    Config {
        cases,
        // Failures are reported with their minimal input; no regression files in the tree.
        failure_persistence: None,
        ..Config::default()
    }
}

/// Image references the validator accepts.
fn valid_ref() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec!["", "docker.io/", "eu.gcr.io/", "localhost:5000/"]),
        "[a-z0-9]{1,8}(/[a-z0-9]{1,8}){0,2}",
        prop::option::of("[A-Za-z0-9_][A-Za-z0-9_.-]{0,10}"),
        prop::option::of("[0-9a-f]{64}"),
    )
        .prop_map(|(registry, path, tag, digest)| {
            let mut reference = format!("{registry}{path}");
            if let Some(tag) = tag {
                reference = format!("{reference}:{tag}");
            }
            if let Some(digest) = digest {
                reference = format!("{reference}@sha256:{digest}");
            }
            reference
        })
}

fn digest() -> impl Strategy<Value = String> {
    "[0-9a-f]{64}".prop_map(|hex| format!("sha256:{hex}"))
}

/// Layers the validator accepts, compressed remote ones with their diff_id and direct ones
/// holding a real tar archive, so that the stored spec is exactly the one sent.
fn valid_layer() -> impl Strategy<Value = ContentLayer> {
    prop_oneof![
        (
            "[a-z0-9/._-]{1,20}",
            digest(),
            digest(),
            prop::sample::select(MEDIA_TYPES[1..].to_vec()),
            1i64..(1 << 40),
        )
            .prop_map(|(path, digest, diff_id, media_type, size)| ContentLayer {
                spec: Some(LayerSpec::Remote(RemoteContentLayer {
                    url: format!("https://content.example.com/{path}"),
                    digest,
                    diff_id,
                    media_type: media_type.to_owned(),
                    size,
                })),
            }),
        prop::collection::vec(any::<u8>(), 0..64).prop_map(|bytes| direct_layer(&bytes)),
    ]
}

fn valid_spec() -> impl Strategy<Value = ImageSpec> {
    (
        valid_ref(),
        prop::option::of(valid_ref()),
        prop::option::of(valid_ref()),
        prop::collection::vec(valid_layer(), 0..4),
        prop::collection::vec(valid_ref(), 0..3),
    )
        .prop_map(
            |(base_ref, ide_ref, supervisor_ref, content_layer, ide_layer_ref)| ImageSpec {
                base_ref,
                ide_ref: ide_ref.unwrap_or_default(),
                content_layer,
                supervisor_ref: supervisor_ref.unwrap_or_default(),
                ide_layer_ref,
            },
        )
}

/// A string that is sometimes valid for its field and often not: any Unicode, control
/// characters, near misses.
fn hostile_string(valid: impl Strategy<Value = String>) -> impl Strategy<Value = String> {
    prop_oneof![
        valid,
        any::<String>(),
        "[ -~]{0,40}",
        Just(String::new()),
        Just("' OR 1=1; DROP TABLE specs; --".to_owned()),
    ]
}

/// Specs of every shape, mostly invalid.
fn arbitrary_spec() -> impl Strategy<Value = ImageSpec> {
    let layer = prop_oneof![
        Just(ContentLayer { spec: None }),
        (
            hostile_string("https://[a-z.]{1,10}/[a-z]{0,5}".prop_map(String::from)),
            hostile_string(digest()),
            hostile_string(digest()),
            hostile_string(prop::sample::select(MEDIA_TYPES.to_vec()).prop_map(String::from)),
            any::<i64>(),
        )
            .prop_map(|(url, digest, diff_id, media_type, size)| ContentLayer {
                spec: Some(LayerSpec::Remote(RemoteContentLayer {
                    url,
                    digest,
                    diff_id,
                    media_type,
                    size,
                })),
            }),
        prop::collection::vec(any::<u8>(), 0..1100).prop_map(|content| ContentLayer {
            spec: Some(LayerSpec::Direct(
                spec_provider::proto::registryfacade::DirectContentLayer { content },
            )),
        }),
        prop::collection::vec(any::<u8>(), 0..32).prop_map(|bytes| direct_layer(&bytes)),
    ];
    (
        hostile_string(valid_ref()),
        hostile_string(valid_ref()),
        prop::collection::vec(layer, 0..4),
        hostile_string(valid_ref()),
        prop::collection::vec(hostile_string(valid_ref()), 0..3),
    )
        .prop_map(
            |(base_ref, ide_ref, content_layer, supervisor_ref, ide_layer_ref)| ImageSpec {
                base_ref,
                ide_ref,
                content_layer,
                supervisor_ref,
                ide_layer_ref,
            },
        )
}

/// Ids by the grammar `[a-z0-9]+([._-][a-z0-9]+)*`.
fn valid_id() -> impl Strategy<Value = String> {
    "[a-z0-9]{1,6}([._-][a-z0-9]{1,6}){0,4}"
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn arbitrary_specs_never_panic_and_what_is_accepted_validates_again_unchanged(
        spec in arbitrary_spec()
    ) {
        if let Ok(validated) = validate_spec("spec", Some(&spec), &rules()) {
            let stored = ImageSpec::decode(validated.bytes()).unwrap();
            prop_assert_eq!(&stored.base_ref, &spec.base_ref);
            prop_assert_eq!(stored.content_layer.len(), spec.content_layer.len());
            let again = validate_spec("spec", Some(&stored), &rules()).unwrap();
            prop_assert_eq!(again.bytes(), validated.bytes());
        }
    }

    #[test]
    fn valid_specs_are_accepted_and_stored_exactly(spec in valid_spec()) {
        let validated = validate_spec("spec", Some(&spec), &rules())
            .map_err(|v| TestCaseError::fail(format!("{v:?}")))?;
        prop_assert_eq!(ImageSpec::decode(validated.bytes()).unwrap(), spec);
    }

    #[test]
    fn image_specs_round_trip_through_the_json_mapping(spec in arbitrary_spec()) {
        let json = serde_json::to_string(&spec).unwrap();
        let back: ImageSpec = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(back, spec);
    }

    #[test]
    fn arbitrary_text_as_json_never_panics(text in prop_oneof![
        any::<String>(),
        r#"\{"(baseRef|base_ref|contentLayer|ideLayerRef)": ?(\[|\{|"|-?[0-9]|null|true).{0,30}"#,
    ]) {
        if let Ok(spec) = serde_json::from_str::<ImageSpec>(&text) {
            let _ = validate_spec("spec", Some(&spec), &rules());
        }
    }

    #[test]
    fn arbitrary_json_values_as_specs_never_panic(value in json_value()) {
        if let Ok(spec) = serde_json::from_value::<ImageSpec>(value) {
            let _ = validate_spec("spec", Some(&spec), &rules());
        }
    }

    #[test]
    fn any_string_is_a_page_token_for_these_filters_or_refused(
        token in prop_oneof![any::<String>(), "[A-Za-z0-9_-]{0,80}"],
        prefix in "[a-z-]{0,4}",
    ) {
        // A refusal is a sentence for the client; a token found valid names a valid id.
        match PageToken::decode(&token, &prefix, &Labels::new()) {
            Ok(decoded) => prop_assert!(SpecId::parse(decoded.after_id.as_str()).is_ok()),
            Err(sentence) => prop_assert!(!sentence.is_empty()),
        }
    }

    #[test]
    fn issued_page_tokens_decode_only_under_their_own_filters(
        id in valid_id(),
        prefix in "[a-z]{0,3}",
        other in "[a-z]{0,3}",
    ) {
        let id = SpecId::parse(&id).unwrap();
        let token = PageToken::new(id.clone(), &prefix, &Labels::new()).encode();
        prop_assert_eq!(PageToken::decode(&token, &prefix, &Labels::new()).unwrap().after_id, id);
        prop_assert_eq!(
            PageToken::decode(&token, &other, &Labels::new()).is_ok(),
            other == prefix
        );
    }

    #[test]
    fn valid_ids_are_accepted_as_they_are_and_every_prefix_of_one_is_a_prefix(id in valid_id()) {
        let parsed = SpecId::parse(&id).unwrap();
        prop_assert_eq!(parsed.as_str(), id.as_str());
        for end in 0..=id.len() {
            prop_assert!(is_id_prefix(&id[..end]));
        }
    }

    #[test]
    fn ids_with_any_character_outside_the_grammar_are_refused(
        id in "[a-z0-9]{0,5}[^a-z0-9._-][a-z0-9]{0,5}"
    ) {
        prop_assert!(SpecId::parse(&id).is_err());
        prop_assert!(!is_id_prefix(&id));
    }

    #[test]
    fn arbitrary_labels_never_panic_and_kubernetes_style_ones_are_accepted(
        hostile in prop::collection::btree_map(any::<String>(), any::<String>(), 0..5),
        valid in prop::collection::btree_map(
            "([a-z0-9]{1,8}\\.){0,2}[a-z]{1,8}/[a-z0-9]([a-z0-9_.-]{0,20}[a-z0-9])?",
            "([A-Za-z0-9]([A-Za-z0-9_.-]{0,20}[A-Za-z0-9])?)?",
            0..8,
        ),
    ) {
        let _ = validate_labels("labels", &hostile);
        prop_assert_eq!(validate_labels("labels", &valid), vec![]);
    }
}

/// Arbitrary JSON documents, nested a few levels, with the spec's field names among the keys.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        any::<String>().prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    prop::sample::select(vec![
                        "baseRef",
                        "base_ref",
                        "ideRef",
                        "contentLayer",
                        "content_layer",
                        "remote",
                        "direct",
                        "content",
                        "url",
                        "digest",
                        "diffId",
                        "mediaType",
                        "size",
                        "supervisorRef",
                        "ideLayerRef",
                    ])
                    .prop_map(String::from),
                    any::<String>(),
                ],
                inner,
                0..5,
            )
            .prop_map(|map| serde_json::Value::Object(map.into_iter().collect())),
        ]
    })
}

/// The code of an RPC's result.
fn code<T>(result: Result<T, tonic::Status>) -> Code {
    match result {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

/// What a hostile ListSpecs / GetImageSpec / GetSpec / PutSpec field may get back: an answer, or
/// a clean refusal. Never INTERNAL or UNKNOWN, which would mean the server broke.
fn assert_clean(code: Code, what: &str) -> Result<(), TestCaseError> {
    prop_assert!(
        matches!(
            code,
            Code::Ok | Code::InvalidArgument | Code::NotFound | Code::AlreadyExists
        ),
        "{what}: {code:?}"
    );
    Ok(())
}

#[test]
fn hostile_ids_prefixes_labels_and_page_tokens_get_clean_answers_from_a_running_server() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let app: TestApp = runtime.block_on(spawn_app(Backend::Sqlite));
    runtime
        .block_on(app.admin.clone().put_spec(put("ws-1", full_spec(1))))
        .unwrap();
    let strategy = (
        hostile_string(valid_id()),
        hostile_string("[a-z-]{0,4}".prop_map(String::from)),
        prop::collection::hash_map(any::<String>(), any::<String>(), 0..3),
        prop_oneof![any::<String>(), "[A-Za-z0-9_-]{0,60}"],
        any::<i32>(),
    );
    let mut runner = TestRunner::new(config(64));
    runner
        .run(&strategy, |(id, prefix, labels, token, page_size)| {
            runtime.block_on(async {
                let mut provider = app.provider.clone();
                let mut admin = app.admin.clone();
                let got = provider
                    .get_image_spec(GetImageSpecRequest { id: id.clone() })
                    .await;
                assert_clean(code(got), "GetImageSpec")?;
                let got = admin.get_spec(GetSpecRequest { id: id.clone() }).await;
                assert_clean(code(got), "GetSpec")?;
                let listed = admin
                    .list_specs(ListSpecsRequest {
                        page_size,
                        page_token: token,
                        id_prefix: prefix,
                        labels: labels.clone(),
                        view: SpecView::Basic as i32,
                    })
                    .await;
                assert_clean(code(listed), "ListSpecs")?;
                let stored = admin
                    .put_spec(PutSpecRequest {
                        labels,
                        ..put(&id, full_spec(1))
                    })
                    .await;
                assert_clean(code(stored), "PutSpec")
            })
        })
        .unwrap();
}

/// Strings that would change a statement built by concatenation.
const INJECTIONS: [&str; 6] = [
    "'; DROP TABLE specs; --",
    "ws-1' OR '1'='1",
    "\" OR \"\"=\"",
    "ws%",
    "%' UNION SELECT id, spec FROM specs --",
    "ws-1); DELETE FROM specs; --",
];

async fn sql_injection_through_ids_prefixes_and_labels_changes_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut admin = app.admin.clone();
    let mut before = Vec::new();
    for (id, team) in [("ws-1", "a"), ("ws-2", "b"), ("w_3", "a")] {
        let record = admin
            .put_spec(PutSpecRequest {
                labels: labels(&[("team", team)]),
                ..put(id, full_spec(1))
            })
            .await
            .unwrap()
            .into_inner();
        before.push(record);
    }

    for attack in INJECTIONS {
        let refused = admin.put_spec(put(attack, full_spec(2))).await.unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{attack}");
        let refused = admin
            .delete_spec(spec_provider::proto::specprovider::v1::DeleteSpecRequest {
                id: attack.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{attack}");
        let got = admin.get_spec(GetSpecRequest { id: attack.into() }).await;
        assert_eq!(got.unwrap_err().code(), Code::InvalidArgument, "{attack}");
        let listed = admin
            .list_specs(ListSpecsRequest {
                id_prefix: attack.into(),
                ..Default::default()
            })
            .await;
        assert_eq!(
            listed.unwrap_err().code(),
            Code::InvalidArgument,
            "{attack}"
        );
        for labels in [labels(&[(attack, "a")]), labels(&[("team", attack)])] {
            let listed = admin
                .list_specs(ListSpecsRequest {
                    labels: labels.clone(),
                    ..Default::default()
                })
                .await;
            // Refused, or (where the syntax allows it) matched literally: nothing carries it.
            match listed {
                Ok(page) => assert!(page.into_inner().specs.is_empty(), "{attack}"),
                Err(status) => assert_eq!(status.code(), Code::InvalidArgument, "{attack}"),
            }
            let stored = admin
                .put_spec(PutSpecRequest {
                    labels,
                    ..put("ws-1", full_spec(1))
                })
                .await;
            assert_eq!(
                stored.unwrap_err().code(),
                Code::InvalidArgument,
                "{attack}"
            );
        }
    }
    // LIKE wildcards in a valid prefix are matched literally: `w_` is not `w` + any character.
    let listed = admin
        .list_specs(ListSpecsRequest {
            id_prefix: "w_".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<_> = listed.specs.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["w_3"]);

    // The table is intact and every record unchanged.
    let after = admin
        .list_specs(ListSpecsRequest {
            view: SpecView::Full as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .specs;
    before.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(after, before);
}
