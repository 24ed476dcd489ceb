//! The monitoring kit in `deploy/monitoring/`: the alerting rules pass `promtool check rules` and
//! their `promtool test rules` unit tests, and every alert's tests would notice its expression
//! breaking; the PrometheusRule holds exactly the rules file; the Prometheus Operator manifests have
//! the operator's structure and scrape what the Deployment serves; the Grafana dashboard is one;
//! and every metric the dashboard and the rules use is served by a real server.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::app::spawn_app;
use crate::db::Backend;
use crate::deploy;
use crate::observability::scrape;

const RULES: &str = "alerts.rules.yaml";
const UNIT_TESTS: &str = "alerts.test.yaml";
const PROMETHEUS_RULE: &str = "prometheusrule.yaml";
const POD_MONITOR: &str = "podmonitor.yaml";
const DASHBOARD: &str = "grafana-dashboard.json";

/// The job the rules select, which the PodMonitor gives spec-provider's targets.
const JOB: &str = "spec-provider";

/// Metrics the kit uses that Prometheus makes rather than the server: `up` is written for every
/// target at each scrape.
const NOT_FROM_THE_SERVER: &[&str] = &["up"];

/// What the dashboard must show (RPCs, latency, cache, pool, store, specs, sweeper, process), as
/// the metrics that show it.
const ON_THE_DASHBOARD: &[&str] = &[
    "grpc_server_handled_total",
    "grpc_server_handling_seconds_bucket",
    "spec_provider_cache_hits_total",
    "spec_provider_cache_misses_total",
    "spec_provider_cache_bytes",
    "spec_provider_cache_entries",
    "spec_provider_cache_bypassed",
    "spec_provider_db_pool_connections",
    "spec_provider_db_pool_idle_connections",
    "spec_provider_db_pool_max_connections",
    "spec_provider_store_query_duration_seconds_bucket",
    "spec_provider_specs_stored",
    "spec_provider_sweeper_deleted_total",
    "process_resident_memory_bytes",
    "process_cpu_seconds_total",
];

fn monitoring_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/monitoring")
}

fn read(name: &str) -> String {
    let path = monitoring_dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("reading {}: {err}", path.display()))
}

/// A YAML file of the kit (one document) as a JSON value.
fn yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|err| panic!("reading {}: {err}", path.display()));
    serde_yaml_ng::from_str(&text).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

fn monitoring_yaml(name: &str) -> Value {
    yaml(&monitoring_dir().join(name))
}

fn dashboard() -> Value {
    serde_json::from_str(&read(DASHBOARD)).unwrap_or_else(|err| panic!("{DASHBOARD}: {err}"))
}

/// Runs `promtool` (Debian's `prometheus` package). Without it the test fails: it never skips.
fn promtool(args: &[&str], file: &Path) -> Output {
    Command::new("promtool")
        .args(args)
        .arg(file)
        .output()
        .unwrap_or_else(|err| {
            panic!(
                "cannot run promtool ({err}): install it with `apt-get install prometheus` \
                 (Debian's package; .ci/run installs it when it is missing)"
            )
        })
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The rules of every group of a rules file (or of a PrometheusRule's spec).
fn alerts(rules: &Value) -> Vec<&Value> {
    rules["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|group| group["rules"].as_array().expect("a group's rules"))
        .collect()
}

fn alert_name(rule: &Value) -> &str {
    rule["alert"].as_str().unwrap_or_else(|| {
        panic!("a rule without an alert name (recording rules belong elsewhere): {rule}")
    })
}

#[test]
fn promtool_accepts_the_rules() {
    let output = promtool(&["check", "rules"], &monitoring_dir().join(RULES));
    assert!(output.status.success(), "{}", text(&output));
}

#[test]
fn every_alert_passes_its_promtool_unit_tests() {
    let output = promtool(&["test", "rules"], &monitoring_dir().join(UNIT_TESTS));
    assert!(output.status.success(), "{}", text(&output));
    assert!(text(&output).contains("SUCCESS"), "{}", text(&output));
}

#[test]
fn every_alert_has_a_firing_and_a_quiet_unit_test() {
    let unit_tests = monitoring_yaml(UNIT_TESTS);
    assert_eq!(unit_tests["rule_files"], serde_json::json!([RULES]));
    let mut firing = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for test in unit_tests["tests"].as_array().expect("tests") {
        for case in test["alert_rule_test"].as_array().into_iter().flatten() {
            let name = case["alertname"].as_str().expect("alertname").to_owned();
            let expected = case["exp_alerts"].as_array().expect("exp_alerts");
            if expected.is_empty() {
                quiet.insert(name);
            } else {
                for alert in expected {
                    // promtool compares annotations too, so each firing case pins them.
                    for key in ["summary", "description", "runbook_url"] {
                        assert!(
                            alert["exp_annotations"][key].is_string(),
                            "a firing case of {name} has no exp_annotations.{key}"
                        );
                    }
                }
                firing.insert(name);
            }
        }
    }
    let rules = monitoring_yaml(RULES);
    let names: BTreeSet<String> = alerts(&rules)
        .into_iter()
        .map(|rule| alert_name(rule).to_owned())
        .collect();
    assert!(names.len() >= 8, "{names:?}");
    let no_firing: Vec<_> = names.difference(&firing).collect();
    let no_quiet: Vec<_> = names.difference(&quiet).collect();
    assert!(
        no_firing.is_empty(),
        "alerts without a test where they fire: {no_firing:?}"
    );
    assert!(
        no_quiet.is_empty(),
        "alerts without a test where they stay quiet: {no_quiet:?}"
    );
    let unknown: Vec<_> = firing
        .union(&quiet)
        .filter(|name| !names.contains(*name))
        .collect();
    assert!(
        unknown.is_empty(),
        "unit tests of alerts that do not exist: {unknown:?}"
    );
}

/// The alerts whose unit tests failed in a `promtool test rules` run: `(name, true)` for a case
/// that expected it to fire, `(name, false)` for one that expected quiet.
fn failed_cases(output: &str) -> BTreeSet<(String, bool)> {
    let lines: Vec<&str> = output.lines().map(str::trim).collect();
    lines
        .iter()
        .enumerate()
        .filter_map(|(i, line)| {
            let name = line.strip_prefix("alertname: ")?.split(',').next()?;
            let expected_quiet = lines.get(i + 1)?.starts_with("exp:[],");
            Some((name.to_owned(), !expected_quiet))
        })
        .collect()
}

/// Runs the unit tests against `rules` in place of the rules file.
fn unit_tests_against(rules: &Value) -> String {
    let dir = tempfile::tempdir().unwrap();
    // JSON is YAML, and promtool reads the rule files the unit tests name from their directory.
    std::fs::write(
        dir.path().join(RULES),
        serde_json::to_string_pretty(rules).unwrap(),
    )
    .unwrap();
    std::fs::write(dir.path().join(UNIT_TESTS), read(UNIT_TESTS)).unwrap();
    let output = promtool(&["test", "rules"], &dir.path().join(UNIT_TESTS));
    assert!(
        !output.status.success(),
        "the unit tests passed against {rules}"
    );
    text(&output)
}

/// `rules` with every alert's expression replaced by `expr`.
fn with_every_expr(rules: &Value, expr: &str) -> Value {
    let mut rules = rules.clone();
    for group in rules["groups"].as_array_mut().unwrap() {
        for rule in group["rules"].as_array_mut().unwrap() {
            rule["expr"] = Value::from(expr);
        }
    }
    rules
}

#[test]
fn each_alerts_unit_tests_fail_once_its_expression_never_or_always_fires() {
    let rules = monitoring_yaml(RULES);
    let names: Vec<String> = alerts(&rules)
        .into_iter()
        .map(|rule| alert_name(rule).to_owned())
        .collect();

    // An empty vector never fires, so each alert's firing cases must fail; a vector that is
    // always there always fires, so each alert's quiet cases must fail.
    for (expr, breakage, fails_firing_case) in [
        ("vector(1) < 0", "never firing", true),
        ("vector(1)", "always firing", false),
    ] {
        let failed = failed_cases(&unit_tests_against(&with_every_expr(&rules, expr)));
        let unnoticed: Vec<_> = names
            .iter()
            .filter(|name| !failed.contains(&((*name).clone(), fails_firing_case)))
            .collect();
        assert!(
            unnoticed.is_empty(),
            "no unit test notices these alerts {breakage}: {unnoticed:?}"
        );
    }
}

#[test]
fn every_alert_has_a_severity_a_summary_a_description_and_a_runbook_entry() {
    let runbook =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/operations.md"))
            .unwrap();
    let rules = monitoring_yaml(RULES);
    for rule in alerts(&rules) {
        let name = alert_name(rule);
        let severity = rule["labels"]["severity"].as_str();
        assert!(
            matches!(severity, Some("warning" | "critical")),
            "{name}: severity {severity:?}"
        );
        for key in ["summary", "description"] {
            let value = rule["annotations"][key].as_str().unwrap_or_default();
            assert!(value.len() > 10, "{name} has no {key}");
        }
        // GitHub's (and most renderers') anchor of the heading `### NAME`.
        let anchor = name.to_lowercase();
        assert_eq!(
            rule["annotations"]["runbook_url"].as_str(),
            Some(format!("docs/operations.md#{anchor}").as_str()),
            "{name}'s runbook_url"
        );
        let heading = format!("\n### {name}\n");
        let start = runbook
            .find(&heading)
            .unwrap_or_else(|| panic!("docs/operations.md has no heading `### {name}`"));
        let entry = &runbook[start + heading.len()..];
        let entry = &entry[..entry.find("\n#").unwrap_or(entry.len())];
        for part in [
            "**What it means.**",
            "**What to check.**",
            "**What to do.**",
        ] {
            assert!(
                entry.contains(part),
                "the runbook entry of {name} lacks {part}"
            );
        }
    }
}

#[test]
fn the_prometheus_rule_holds_exactly_the_groups_of_the_rules_file() {
    let rules = monitoring_yaml(RULES);
    let resource = monitoring_yaml(PROMETHEUS_RULE);
    let (file, operator) = (alerts(&rules), alerts(&resource["spec"]));
    let names = |rules: &[&Value]| -> Vec<String> {
        rules
            .iter()
            .map(|rule| alert_name(rule).to_owned())
            .collect()
    };
    assert_eq!(
        names(&file),
        names(&operator),
        "{RULES} and {PROMETHEUS_RULE} hold different alerts"
    );
    for (a, b) in file.iter().zip(&operator) {
        assert_eq!(
            a,
            b,
            "{} differs between {RULES} and {PROMETHEUS_RULE}",
            alert_name(a)
        );
    }
    assert_eq!(rules["groups"], resource["spec"]["groups"]);
}

/// Fails unless `value` is an object whose keys are all in `allowed` and include `required`.
fn assert_keys(what: &str, value: &Value, required: &[&str], allowed: &[&str]) {
    let object = value
        .as_object()
        .unwrap_or_else(|| panic!("{what} is not a mapping: {value}"));
    for key in required {
        assert!(object.contains_key(*key), "{what} lacks {key}");
    }
    for key in object.keys() {
        assert!(
            allowed.contains(&key.as_str()) || required.contains(&key.as_str()),
            "{what} has the unknown field {key}"
        );
    }
}

fn assert_string_map(what: &str, value: &Value) {
    let object = value
        .as_object()
        .unwrap_or_else(|| panic!("{what} is not a mapping"));
    for (key, value) in object {
        assert!(value.is_string(), "{what}.{key} is not a string: {value}");
    }
}

/// The fields of a custom resource that every kind has.
fn assert_resource(file: &str, resource: &Value, kind: &str) {
    assert_keys(
        file,
        resource,
        &["apiVersion", "kind", "metadata", "spec"],
        &[],
    );
    assert_eq!(resource["apiVersion"], "monitoring.coreos.com/v1", "{file}");
    assert_eq!(resource["kind"], kind, "{file}");
    assert_keys(
        &format!("{file}: metadata"),
        &resource["metadata"],
        &["name"],
        &["labels", "annotations"],
    );
    assert_string_map(
        &format!("{file}: metadata.labels"),
        &resource["metadata"]["labels"],
    );
}

#[test]
fn the_prometheus_rule_has_the_operators_structure() {
    // The Prometheus Operator's PrometheusRule (monitoring.coreos.com/v1), as far as used here.
    let resource = monitoring_yaml(PROMETHEUS_RULE);
    assert_resource(PROMETHEUS_RULE, &resource, "PrometheusRule");
    assert_keys("spec", &resource["spec"], &["groups"], &[]);
    let duration = |what: &str, value: &Value| {
        let text = value
            .as_str()
            .unwrap_or_else(|| panic!("{what} is not a string"));
        let digits = text.trim_end_matches(|c: char| c.is_ascii_alphabetic());
        let unit = &text[digits.len()..];
        assert!(
            !digits.is_empty()
                && digits.chars().all(|c| c.is_ascii_digit())
                && ["ms", "s", "m", "h", "d", "w", "y"].contains(&unit),
            "{what} is not a Prometheus duration: {text}"
        );
    };
    for group in resource["spec"]["groups"].as_array().expect("spec.groups") {
        assert_keys("a group", group, &["name", "rules"], &["interval", "limit"]);
        for rule in group["rules"].as_array().expect("a group's rules") {
            let name = alert_name(rule);
            assert_keys(
                name,
                rule,
                &["alert", "expr"],
                &["for", "keep_firing_for", "labels", "annotations"],
            );
            assert!(rule["expr"].is_string(), "{name}: expr");
            duration(&format!("{name}: for"), &rule["for"]);
            assert_string_map(&format!("{name}: labels"), &rule["labels"]);
            assert_string_map(&format!("{name}: annotations"), &rule["annotations"]);
        }
    }
}

/// The pod template of the Deployment in `deploy/kubernetes/`.
fn deployment_pod() -> Value {
    yaml(&deploy::manifest_dir().join("deployment.yaml"))["spec"]["template"].clone()
}

#[test]
fn the_pod_monitor_scrapes_the_deployments_metrics_port_under_the_rules_job() {
    let monitor = monitoring_yaml(POD_MONITOR);
    assert_resource(POD_MONITOR, &monitor, "PodMonitor");
    let spec = &monitor["spec"];
    assert_keys(
        "spec",
        spec,
        &["selector", "podMetricsEndpoints"],
        &[
            "jobLabel",
            "namespaceSelector",
            "podTargetLabels",
            "sampleLimit",
        ],
    );
    assert_keys("spec.selector", &spec["selector"], &["matchLabels"], &[]);
    assert_string_map(
        "spec.selector.matchLabels",
        &spec["selector"]["matchLabels"],
    );

    let pod = deployment_pod();
    let pod_labels = pod["metadata"]["labels"].as_object().expect("pod labels");
    for (key, value) in spec["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(pod_labels.get(key), Some(value), "the selector's {key}");
    }
    // The job label comes from the pod label jobLabel names: the job the rules select.
    let job_label = spec["jobLabel"].as_str().expect("jobLabel");
    assert_eq!(pod_labels.get(job_label), Some(&Value::from(JOB)));

    let ports: Vec<&Value> = pod["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|container| container["ports"].as_array().unwrap())
        .collect();
    let endpoints = spec["podMetricsEndpoints"]
        .as_array()
        .expect("podMetricsEndpoints");
    assert_eq!(endpoints.len(), 1);
    for endpoint in endpoints {
        assert_keys(
            "a podMetricsEndpoint",
            endpoint,
            &["port", "path"],
            &["interval", "scrapeTimeout", "scheme"],
        );
        let port = ports
            .iter()
            .find(|port| port["name"] == endpoint["port"])
            .unwrap_or_else(|| panic!("the Deployment has no port named {}", endpoint["port"]));
        // The port the Deployment's scrape annotation (and so the server's metrics_listen) names.
        assert_eq!(
            port["containerPort"].to_string(),
            pod["metadata"]["annotations"]["prometheus.io/port"]
                .as_str()
                .unwrap()
        );
        assert_eq!(endpoint["path"], "/metrics");
    }
}

#[test]
fn the_monitoring_manifests_validate_and_the_kustomization_lists_them() {
    let kustomization = read("kustomization.yaml");
    let manifests = [POD_MONITOR, PROMETHEUS_RULE];
    for name in manifests {
        assert!(
            kustomization.contains(&format!("  - {name}\n")),
            "{name} is missing from kustomization.yaml"
        );
    }
    // kubernetes-validate has no schema for the operator's kinds (the tests above check their
    // structure) but still checks that each file is one well-formed resource.
    let files: Vec<PathBuf> = manifests
        .iter()
        .map(|name| monitoring_dir().join(name))
        .collect();
    let output = deploy::kubernetes_validate(&files);
    assert!(output.status.success(), "{}", text(&output));
}

#[test]
fn the_dashboard_is_a_grafana_dashboard_with_datasource_job_and_instance_variables() {
    let dashboard = dashboard();
    assert!(dashboard["title"].is_string() && dashboard["uid"].is_string());
    assert!(
        dashboard["schemaVersion"].as_u64() >= Some(36),
        "schemaVersion {} predates datasource references by uid",
        dashboard["schemaVersion"]
    );
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list");
    let variable = |name: &str| {
        variables
            .iter()
            .find(|variable| variable["name"] == name)
            .unwrap_or_else(|| panic!("no dashboard variable {name}"))
    };
    let datasource = variable("datasource");
    assert_eq!(datasource["type"], "datasource");
    assert_eq!(datasource["query"], "prometheus");
    let reference = serde_json::json!({"type": "prometheus", "uid": "${datasource}"});
    for name in ["job", "instance"] {
        let variable = variable(name);
        assert_eq!(variable["type"], "query", "{name}");
        assert_eq!(variable["datasource"], reference, "{name}");
    }
    assert_eq!(variable("instance")["multi"], true);
    assert_eq!(variable("instance")["includeAll"], true);

    let panels = panels(&dashboard);
    assert!(panels.len() >= 15, "{} panels", panels.len());
    let mut ids = BTreeSet::new();
    for panel in &panels {
        let title = panel["title"].as_str().expect("a panel title");
        assert!(
            ids.insert(panel["id"].as_u64().expect("a panel id")),
            "{title}: id taken"
        );
        let grid = &panel["gridPos"];
        let (x, w) = (grid["x"].as_u64().unwrap(), grid["w"].as_u64().unwrap());
        assert!(
            w > 0 && x + w <= 24 && grid["h"].as_u64() > Some(0),
            "{title}: {grid}"
        );
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"], reference, "{title}: datasource");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title} has no targets");
        let mut ref_ids = BTreeSet::new();
        for target in targets {
            assert_eq!(
                target["datasource"], reference,
                "{title}: a target's datasource"
            );
            assert!(
                ref_ids.insert(target["refId"].as_str().expect("refId")),
                "{title}"
            );
            let expr = target["expr"].as_str().expect("expr");
            // Every series comes from the chosen job and instances.
            for selector in selectors(expr) {
                for (label, op, value) in [("job", "=", "$job"), ("instance", "=~", "$instance")] {
                    assert!(
                        selector.has(label, op, value),
                        "{title}: {} is not filtered by {label}{op}\"{value}\"",
                        selector.metric
                    );
                }
            }
        }
    }

    let used = dashboard_metrics(&dashboard);
    let missing: Vec<_> = ON_THE_DASHBOARD
        .iter()
        .filter(|name| !used.contains(**name))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard shows none of {missing:?}"
    );
}

#[test]
fn every_dashboard_query_is_valid_promql() {
    // promtool parses each query as the expression of a recording rule, with the variables
    // replaced by what Grafana would send.
    let dashboard = dashboard();
    let mut rules = Vec::new();
    for panel in panels(&dashboard) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "1m")
                .replace("$job", JOB)
                .replace("$instance", ".+");
            rules.push(serde_json::json!({
                "record": format!("dashboard:panel_{}:{}", panel["id"], target["refId"].as_str().unwrap()),
                "expr": expr,
            }));
        }
    }
    let file = serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]});
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dashboard.rules.yaml");
    std::fs::write(&path, file.to_string()).unwrap();
    let output = promtool(&["check", "rules"], &path);
    assert!(output.status.success(), "{}", text(&output));
}

#[test]
fn every_rule_selects_the_spec_provider_job() {
    // The grpc_server_* names are shared with every Go gRPC server: without the job the rules
    // would count theirs too.
    let rules = monitoring_yaml(RULES);
    for rule in alerts(&rules) {
        for selector in selectors(rule["expr"].as_str().unwrap()) {
            assert!(
                selector.has("job", "=", JOB),
                "{}: {} is not filtered by job=\"{JOB}\"",
                alert_name(rule),
                selector.metric
            );
        }
    }
}

#[tokio::test]
async fn every_metric_the_dashboard_and_the_rules_use_is_served() {
    let mut used: BTreeMap<String, Vec<Selector>> = BTreeMap::new();
    let rules = monitoring_yaml(RULES);
    let exprs = alerts(&rules)
        .into_iter()
        .map(|rule| rule["expr"].as_str().unwrap().to_owned())
        .chain(dashboard_exprs(&dashboard()));
    for expr in exprs {
        for selector in selectors(&expr) {
            used.entry(selector.metric.clone())
                .or_default()
                .push(selector);
        }
    }
    for name in dashboard_metrics(&dashboard()) {
        used.entry(name).or_default();
    }

    let app = spawn_app(Backend::Sqlite).await;
    let metrics = scrape(app.metrics_addr).await.text;
    let lines_of = |name: &str| {
        metrics
            .lines()
            .filter(move |line| {
                line.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(['{', ' ']))
            })
            .collect::<Vec<_>>()
    };
    let missing: Vec<&String> = used
        .keys()
        .filter(|name| !NOT_FROM_THE_SERVER.contains(&name.as_str()))
        .filter(|name| lines_of(name).is_empty())
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard or the rules use metrics the server does not serve: {missing:?}"
    );

    // The label values they select exist too (a renamed service or method breaks this test).
    for (name, selectors) in &used {
        let lines = lines_of(name);
        for selector in selectors {
            for (label, op, value) in &selector.matchers {
                if ["job", "instance"].contains(&label.as_str())
                    || !["=", "=~"].contains(&op.as_str())
                {
                    continue;
                }
                for alternative in value.split('|') {
                    let pair = format!("{label}=\"{alternative}\"");
                    assert!(
                        lines.iter().any(|line| line.contains(&pair)),
                        "no series of {name} has {pair}"
                    );
                }
            }
        }
    }
}

/// Every panel, those inside collapsed rows included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|panel| {
            std::iter::once(panel).chain(panel["panels"].as_array().into_iter().flatten())
        })
        .collect()
}

fn dashboard_exprs(dashboard: &Value) -> Vec<String> {
    panels(dashboard)
        .into_iter()
        .flat_map(|panel| panel["targets"].as_array().into_iter().flatten())
        .map(|target| target["expr"].as_str().expect("expr").to_owned())
        .collect()
}

/// The metrics the dashboard's queries and its variables' `label_values(METRIC...)` read.
fn dashboard_metrics(dashboard: &Value) -> BTreeSet<String> {
    let variables = dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|variable| variable["query"]["query"].as_str())
        .filter_map(|query| {
            let rest = query.strip_prefix("label_values(")?;
            Some(rest[..rest.find(['{', ','])?].trim().to_owned())
        });
    dashboard_exprs(dashboard)
        .iter()
        .flat_map(|expr| selectors(expr))
        .map(|selector| selector.metric)
        .chain(variables)
        .collect()
}

/// A vector selector of a PromQL expression.
#[derive(Debug)]
struct Selector {
    metric: String,
    /// `(label, operator, value)`, the value unquoted.
    matchers: Vec<(String, String, String)>,
}

impl Selector {
    fn has(&self, label: &str, op: &str, value: &str) -> bool {
        self.matchers
            .iter()
            .any(|(l, o, v)| l == label && o == op && v == value)
    }
}

/// The vector selectors of a PromQL expression: the names outside strings, label matchers,
/// ranges and grouping clauses that are not functions, aggregations or keywords. Enough PromQL
/// for this kit, whose selectors all name their metric and whose strings use double quotes.
fn selectors(expr: &str) -> Vec<Selector> {
    const GROUPING: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    const KEYWORDS: &[&str] = &["and", "or", "unless", "bool", "offset", "inf", "nan"];
    let chars: Vec<char> = expr.chars().collect();
    let name_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut selectors = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' {
            i = past_string(&chars, i);
        } else if c == '[' {
            i = past_closing(&chars, i, ']');
        } else if c.is_ascii_digit() || c == '.' {
            while i < chars.len() && (name_char(chars[i]) || chars[i] == '.') {
                i += 1;
            }
        } else if name_char(c) {
            let start = i;
            while i < chars.len() && name_char(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut next = i;
            while next < chars.len() && chars[next].is_whitespace() {
                next += 1;
            }
            let before = chars.get(next).copied();
            let next_word: String = chars[next..]
                .iter()
                .take_while(|c| name_char(**c))
                .collect();
            if GROUPING.contains(&word.as_str()) {
                if before == Some('(') {
                    i = past_closing(&chars, next, ')');
                }
            } else if before == Some('(')
                || ["by", "without"].contains(&next_word.as_str())
                || KEYWORDS.contains(&word.to_lowercase().as_str())
            {
                // A function, an aggregation or an operator.
            } else if before == Some('{') {
                let end = past_closing(&chars, next, '}');
                let body: String = chars[next + 1..end - 1].iter().collect();
                selectors.push(Selector {
                    metric: word,
                    matchers: matchers(&body),
                });
                i = end;
            } else {
                selectors.push(Selector {
                    metric: word,
                    matchers: Vec::new(),
                });
            }
        } else {
            i += 1;
        }
    }
    selectors
}

/// The index just past the string literal starting at `start`.
fn past_string(chars: &[char], start: usize) -> usize {
    let mut i = start + 1;
    while i < chars.len() && chars[i] != '"' {
        i += if chars[i] == '\\' { 2 } else { 1 };
    }
    i + 1
}

/// The index just past the `close` that ends the bracket at `start`, skipping strings.
fn past_closing(chars: &[char], start: usize, close: char) -> usize {
    let mut i = start + 1;
    while i < chars.len() && chars[i] != close {
        i = if chars[i] == '"' {
            past_string(chars, i)
        } else {
            i + 1
        };
    }
    i + 1
}

/// The matchers of a selector's braces, e.g. `job="x", code=~"a|b"`.
fn matchers(body: &str) -> Vec<(String, String, String)> {
    let chars: Vec<char> = body.chars().collect();
    let mut matchers = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let label_start = i;
        while i < chars.len() && !['=', '!'].contains(&chars[i]) {
            i += 1;
        }
        let label: String = chars[label_start..i].iter().collect();
        let op_start = i;
        while i < chars.len() && chars[i] != '"' {
            i += 1;
        }
        let op: String = chars[op_start..i].iter().collect();
        let end = past_string(&chars, i);
        let value: String = chars[i + 1..end - 1].iter().collect();
        matchers.push((
            label.trim_matches([',', ' ', '\n']).to_owned(),
            op.trim().to_owned(),
            value,
        ));
        i = end;
        while i < chars.len() && [',', ' ', '\n'].contains(&chars[i]) {
            i += 1;
        }
    }
    matchers
}

#[test]
fn the_selector_parser_finds_names_and_matchers_but_not_functions_or_labels() {
    let found = selectors(
        r#"histogram_quantile(0.99, sum by (job, le) (rate(a_bucket{job="j", code=~"A|B"}[5m])))
           / on (job) group_left (x) b offset 5m > bool 0.5 and absent(c{le="+Inf"} == 1)"#,
    );
    let names: Vec<&str> = found.iter().map(|s| s.metric.as_str()).collect();
    assert_eq!(names, ["a_bucket", "b", "c"]);
    assert!(found[0].has("job", "=", "j"));
    assert!(found[0].has("code", "=~", "A|B"));
    assert!(found[1].matchers.is_empty());
    assert!(found[2].has("le", "=", "+Inf"));
}
