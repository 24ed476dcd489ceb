//! `registryfacade.SpecProvider`: the hot read path of every image pull.

use std::time::Instant;

use tonic::{Request, Response, Status};
use tracing::Level;

use super::convert::decode_spec;
use super::{ApiState, finish};
use crate::cache::Loaded;
use crate::domain::{Error, SpecId, micros_now};
use crate::proto::registryfacade::spec_provider_server::SpecProvider;
use crate::proto::registryfacade::{GetImageSpecRequest, GetImageSpecResponse, ImageSpec};

/// The SpecProvider service registry facades call.
#[derive(Clone)]
pub struct ProviderService {
    state: ApiState,
}

impl ProviderService {
    /// The service over shared state.
    pub fn new(state: ApiState) -> Self {
        Self { state }
    }

    async fn get_image_spec(&self, raw_id: &str) -> Result<GetImageSpecResponse, Error> {
        let id = SpecId::parse(raw_id).map_err(|reason| Error::invalid("id", reason))?;
        let store = self.state.store()?;
        let spec = self
            .state
            .cache
            .get_or_load(id.as_str(), || async {
                store
                    .get_spec(&id, micros_now())
                    .await?
                    .map(|served| Loaded::from_served(served, decode_spec))
                    .transpose()
            })
            .await?
            .ok_or_else(|| Error::not_found(id.as_str()))?;
        // A clone of the decoded spec: tonic encodes it again on every answer, which the
        // benchmark (docs/benchmarks.md) shows costs little next to the rest of an RPC.
        Ok(GetImageSpecResponse {
            spec: Some(ImageSpec::clone(&spec)),
        })
    }
}

#[tonic::async_trait]
impl SpecProvider for ProviderService {
    async fn get_image_spec(
        &self,
        request: Request<GetImageSpecRequest>,
    ) -> Result<Response<GetImageSpecResponse>, Status> {
        let started = Instant::now();
        let id = request.into_inner().id;
        let result = ProviderService::get_image_spec(self, &id).await;
        finish(
            "registryfacade.SpecProvider/GetImageSpec",
            &id,
            started,
            Level::DEBUG,
            result,
        )
    }
}
