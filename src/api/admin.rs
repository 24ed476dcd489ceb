//! `specprovider.v1.SpecAdmin`: how workspace managers write specs.
//!
//! Each handler validates (`crate::domain::validate`), calls the store and converts back; it
//! notes its id for the RPC's log line, which the gRPC layer writes (`crate::metrics::rpc_log`).

use tonic::{Request, Response, Status};

use super::ApiState;
use super::convert::{decode_spec, list_response, record_to_proto, report_to_proto};
use crate::domain::validate::{
    VerifyTarget, validate_delete, validate_get, validate_list, validate_put, validate_verify,
};
use crate::domain::verification::{PutVerification, verified_spec};
use crate::domain::{Caller, Error, micros_now};
use crate::metrics::rpc_log::{RpcKind, note};
use crate::proto::specprovider::v1::spec_admin_server::SpecAdmin;
use crate::proto::specprovider::v1::verify_spec_request::Target;
use crate::proto::specprovider::v1::{
    DeleteSpecRequest, DeleteSpecResponse, GetSpecRequest, ListSpecsRequest, ListSpecsResponse,
    PutSpecRequest, SpecRecord, VerifySpecRequest, VerifySpecResponse,
};

/// The SpecAdmin service workspace managers call.
#[derive(Clone)]
pub struct AdminService {
    state: ApiState,
}

impl AdminService {
    /// The service over shared state.
    pub fn new(state: ApiState) -> Self {
        Self { state }
    }
}

/// What a SpecAdmin handler answers.
type Answer<T> = Result<Response<T>, Status>;

/// The message of `request`, its `id` noted for the RPC's log line (the prefix, for a listing).
fn noted<T>(request: Request<T>, kind: RpcKind, id: impl FnOnce(&T) -> &str) -> T {
    let message = request.into_inner();
    note(kind, id(&message).to_owned());
    message
}

/// The message of a write and who sent it, both noted for the RPC's log line. The auth layer
/// put the caller in the request's extensions (`crate::security::auth`); a request that did not
/// pass through it brought no credentials.
fn noted_write<T>(request: Request<T>, id: impl FnOnce(&T) -> &str) -> (T, Caller) {
    let caller = request
        .extensions()
        .get::<Caller>()
        .cloned()
        .unwrap_or_else(Caller::anonymous);
    let kind = RpcKind::Write {
        caller: caller.clone(),
    };
    (noted(request, kind, id), caller)
}

#[tonic::async_trait]
impl SpecAdmin for AdminService {
    async fn put_spec(&self, request: Request<PutSpecRequest>) -> Answer<SpecRecord> {
        let (req, caller) = noted_write(request, |req| &req.id);
        let how =
            PutVerification::requested(req.verify, req.pin_references, self.state.verify_required);
        let mut cmd = validate_put(req.into(), &self.state.rules, caller)?;
        if how != PutVerification::Skip {
            let spec = decode_spec(cmd.spec.bytes())?;
            let report = self.state.verifier.verify(&spec).await;
            cmd.spec = verified_spec(cmd.spec, spec, &report, how, &self.state.rules)?;
        }
        let id = cmd.id.clone();
        let outcome = self.state.store()?.put(cmd, micros_now()).await;
        // Also after a failure: a commit whose answer was lost may have happened. Other
        // replicas hear of the write through the database (see `crate::cache`).
        self.state.cache.invalidate(id.as_str());
        Ok(Response::new(record_to_proto(outcome?.record)?))
    }

    async fn get_spec(&self, request: Request<GetSpecRequest>) -> Answer<SpecRecord> {
        let req = noted(request, RpcKind::Read, |req| &req.id);
        let id = validate_get(&req.id)?;
        let record = self.state.store()?.get(&id, micros_now()).await?;
        let record = record.ok_or_else(|| Error::not_found(id.as_str()))?;
        Ok(Response::new(record_to_proto(record)?))
    }

    async fn list_specs(&self, request: Request<ListSpecsRequest>) -> Answer<ListSpecsResponse> {
        let req = noted(request, RpcKind::Read, |req| &req.id_prefix);
        let page = validate_list(req.into())?;
        let records = self.state.store()?.list(&page.query, micros_now()).await?;
        let (records, next_page_token) = page.cut(records);
        Ok(Response::new(list_response(records, next_page_token)?))
    }

    async fn delete_spec(&self, request: Request<DeleteSpecRequest>) -> Answer<DeleteSpecResponse> {
        let (req, _) = noted_write(request, |req| &req.id);
        let cmd = validate_delete(req.into())?;
        let deleted = self.state.store()?.delete(&cmd, micros_now()).await;
        // Also after a failure, as for puts.
        self.state.cache.invalidate(cmd.id.as_str());
        Ok(Response::new(DeleteSpecResponse { deleted: deleted? }))
    }

    async fn verify_spec(&self, request: Request<VerifySpecRequest>) -> Answer<VerifySpecResponse> {
        let req = noted(request, RpcKind::Read, |req| match &req.target {
            Some(Target::Id(id)) => id,
            Some(Target::Spec(_)) | None => "",
        });
        let spec = match validate_verify(req.into(), &self.state.rules)? {
            VerifyTarget::Stored(id) => {
                // The spec alone, as GetImageSpec reads it: not the whole record.
                let served = self.state.store()?.get_spec(&id, micros_now()).await?;
                let served = served.ok_or_else(|| Error::not_found(id.as_str()))?;
                decode_spec(&served.spec)?
            }
            VerifyTarget::Given(spec) => decode_spec(spec.bytes())?,
        };
        let report = self.state.verifier.verify(&spec).await;
        Ok(Response::new(report_to_proto(report)))
    }
}
