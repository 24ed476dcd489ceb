//! `specprovider.v1.SpecAdmin`: how workspace managers write specs.

use std::time::Instant;

use tonic::{Request, Response, Status};
use tracing::Level;

use super::convert::record_to_proto;
use super::{ApiState, finish};
use crate::domain::validate::{validate_labels, validate_put};
use crate::domain::{
    DeleteCommand, Error, FieldViolation, Labels, ListQuery, PageToken, SpecId, is_id_prefix,
    micros_now,
};
use crate::proto::specprovider::v1::spec_admin_server::SpecAdmin;
use crate::proto::specprovider::v1::{
    DeleteSpecRequest, DeleteSpecResponse, GetSpecRequest, ListSpecsRequest, ListSpecsResponse,
    PutSpecRequest, SpecRecord, SpecView,
};

/// `page_size` when the request leaves it 0.
pub const DEFAULT_PAGE_SIZE: u32 = 100;
/// Larger `page_size` values are clamped to this.
pub const MAX_PAGE_SIZE: u32 = 1000;

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

    async fn put(&self, req: PutSpecRequest) -> Result<SpecRecord, Error> {
        let cmd = validate_put(req, &self.state.rules)?;
        let id = cmd.id.clone();
        let outcome = self.state.store()?.put(cmd, micros_now()).await;
        // Also after a failure: a commit whose answer was lost may have happened. Other
        // replicas hear of the write through the database (see `crate::cache`).
        self.state.cache.invalidate(id.as_str());
        record_to_proto(outcome?.record)
    }

    async fn get(&self, req: GetSpecRequest) -> Result<SpecRecord, Error> {
        let id = parse_id(&req.id)?;
        let record = self
            .state
            .store()?
            .get(&id, micros_now())
            .await?
            .ok_or_else(|| Error::not_found(id.as_str()))?;
        record_to_proto(record)
    }

    async fn list(&self, req: ListSpecsRequest) -> Result<ListSpecsResponse, Error> {
        let labels: Labels = req.labels.into_iter().collect();
        let mut violations = validate_labels("labels", &labels);
        let page_size = match u32::try_from(req.page_size) {
            Ok(0) => DEFAULT_PAGE_SIZE,
            Ok(n) => n.min(MAX_PAGE_SIZE),
            Err(_) => {
                violations.push(FieldViolation::new(
                    "page_size",
                    format!("must not be negative, got {}", req.page_size),
                ));
                0
            }
        };
        if !is_id_prefix(&req.id_prefix) {
            violations.push(FieldViolation::new(
                "id_prefix",
                "may only contain the characters of an id ([a-z0-9._-]) and be at most 200 long",
            ));
        }
        let view = SpecView::try_from(req.view).unwrap_or_else(|_| {
            violations.push(FieldViolation::new(
                "view",
                format!("{} is not a SpecView", req.view),
            ));
            SpecView::Unspecified
        });
        let after = if req.page_token.is_empty() {
            None
        } else {
            match PageToken::decode(&req.page_token, &req.id_prefix, &labels) {
                Ok(token) => Some(token.after_id),
                Err(reason) => {
                    violations.push(FieldViolation::new("page_token", reason));
                    None
                }
            }
        };
        if !violations.is_empty() {
            return Err(Error::InvalidArgument(violations));
        }

        let query = ListQuery {
            after_id: after.map(SpecId::into_string),
            id_prefix: req.id_prefix,
            labels,
            // One more than a page tells whether another page follows.
            limit: page_size + 1,
            include_spec: view == SpecView::Full,
        };
        let mut records = self.state.store()?.list(&query, micros_now()).await?;
        let next_page_token = if records.len() > page_size as usize {
            records.truncate(page_size as usize);
            let last = records.last().expect("a page of at least one record");
            PageToken::new(last.id.clone(), &query.id_prefix, &query.labels).encode()
        } else {
            String::new()
        };
        Ok(ListSpecsResponse {
            specs: records
                .into_iter()
                .map(record_to_proto)
                .collect::<Result<_, _>>()?,
            next_page_token,
        })
    }

    async fn delete(&self, req: DeleteSpecRequest) -> Result<DeleteSpecResponse, Error> {
        let mut violations = Vec::new();
        let id = SpecId::parse(&req.id)
            .map_err(|reason| violations.push(FieldViolation::new("id", reason)))
            .ok();
        if let Some(g) = req.expected_generation.filter(|g| *g < 0) {
            violations.push(FieldViolation::new(
                "expected_generation",
                format!("must not be negative, got {g}"),
            ));
        }
        let Some(id) = id.filter(|_| violations.is_empty()) else {
            return Err(Error::InvalidArgument(violations));
        };
        let cmd = DeleteCommand {
            id,
            expected_generation: req.expected_generation,
            allow_missing: req.allow_missing,
        };
        let deleted = self.state.store()?.delete(&cmd, micros_now()).await;
        // Also after a failure, as for puts.
        self.state.cache.invalidate(cmd.id.as_str());
        let deleted = deleted?;
        Ok(DeleteSpecResponse { deleted })
    }
}

fn parse_id(raw: &str) -> Result<SpecId, Error> {
    SpecId::parse(raw).map_err(|reason| Error::invalid("id", reason))
}

#[tonic::async_trait]
impl SpecAdmin for AdminService {
    async fn put_spec(
        &self,
        request: Request<PutSpecRequest>,
    ) -> Result<Response<SpecRecord>, Status> {
        let started = Instant::now();
        let req = request.into_inner();
        let id = req.id.clone();
        let result = self.put(req).await;
        finish(
            "specprovider.v1.SpecAdmin/PutSpec",
            &id,
            started,
            Level::INFO,
            result,
        )
    }

    async fn get_spec(
        &self,
        request: Request<GetSpecRequest>,
    ) -> Result<Response<SpecRecord>, Status> {
        let started = Instant::now();
        let req = request.into_inner();
        let id = req.id.clone();
        let result = self.get(req).await;
        finish(
            "specprovider.v1.SpecAdmin/GetSpec",
            &id,
            started,
            Level::DEBUG,
            result,
        )
    }

    async fn list_specs(
        &self,
        request: Request<ListSpecsRequest>,
    ) -> Result<Response<ListSpecsResponse>, Status> {
        let started = Instant::now();
        let req = request.into_inner();
        let prefix = req.id_prefix.clone();
        let result = self.list(req).await;
        finish(
            "specprovider.v1.SpecAdmin/ListSpecs",
            &prefix,
            started,
            Level::DEBUG,
            result,
        )
    }

    async fn delete_spec(
        &self,
        request: Request<DeleteSpecRequest>,
    ) -> Result<Response<DeleteSpecResponse>, Status> {
        let started = Instant::now();
        let req = request.into_inner();
        let id = req.id.clone();
        let result = self.delete(req).await;
        finish(
            "specprovider.v1.SpecAdmin/DeleteSpec",
            &id,
            started,
            Level::INFO,
            result,
        )
    }
}
