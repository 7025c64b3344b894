//! One typed method per endpoint bosun's agents, CLI and tests call, so no caller writes an
//! endpoint string by hand. Each takes the credentials it sends: one client serves the runner
//! token, task tokens and the admin token at once.

use std::time::Duration;

use bytes::Bytes;
use hyper::{Method, StatusCode};

use crate::client::{ApiError, Auth, Client, decode_component, encode_component};
use crate::types::*;
use bosun_protocol::task::TaskSpec;

/// Which runner instances `GET /api/v3/runner` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceFilter<'a> {
    /// `namespace/name`.
    ResourceClass(&'a str),
    Namespace(&'a str),
}

/// A project slug as a path: each `/`-separated part percent-encoded, the slashes kept.
fn slug_path(slug: &str) -> String {
    slug.split('/')
        .map(encode_component)
        .collect::<Vec<_>>()
        .join("/")
}

impl Client {
    // ---- runner API (launch-agent) ----

    /// `POST /api/v3/runner/claim?wait=`: a task, or `None` when none came within `wait` (204).
    /// The server holds the request up to `wait`, so the deadline is `wait` plus a margin.
    pub async fn claim(
        &self,
        auth: &Auth,
        request: &ClaimRequest,
        wait: Duration,
    ) -> Result<Option<ClaimResponse>, ApiError> {
        let path = format!("/api/v3/runner/claim?wait={}s", wait.as_secs());
        let response = self
            .send_json(
                Method::POST,
                &path,
                auth,
                Some(request),
                Some(wait + Duration::from_secs(30)),
            )
            .await?;
        if response.status == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        self.decode(Method::POST, &path, &response).map(Some)
    }

    /// bosun's `POST /api/v3/runner/heartbeat` (runner token): the agent's state for the
    /// inventory while it is not claiming (busy to capacity, or draining).
    pub async fn runner_heartbeat(
        &self,
        auth: &Auth,
        request: &ClaimRequest,
    ) -> Result<(), ApiError> {
        let path = "/api/v3/runner/heartbeat";
        let response = self
            .send_json(Method::POST, path, auth, Some(request), None)
            .await?;
        if response.status != StatusCode::NO_CONTENT {
            return Err(ApiError::Decode {
                method: Method::POST,
                url: self.url(path),
                message: format!("expected 204, got {}", response.status),
            });
        }
        Ok(())
    }

    /// `GET /api/v2/task/config` (task token): the compiled job.
    pub async fn task_config(&self, auth: &Auth) -> Result<TaskSpec, ApiError> {
        self.get("/api/v2/task/config", auth).await
    }

    /// `POST /api/v2/task/heartbeat?wait=` (task token): renews the lease. The server holds the
    /// answer up to `wait` (at least a second) and answers at once on a cancel.
    pub async fn heartbeat(
        &self,
        auth: &Auth,
        wait: Duration,
    ) -> Result<HeartbeatResponse, ApiError> {
        let path = format!("/api/v2/task/heartbeat?wait={}s", wait.as_secs().max(1));
        self.post(&path, auth, &serde_json::json!({})).await
    }

    /// `POST /api/v2/task/log?step=&offset=` (task token): appends zstd-compressed log bytes at
    /// `offset` of the step's (uncompressed) log; the server keeps appends idempotent by offset.
    pub async fn append_log(
        &self,
        auth: &Auth,
        step: u32,
        offset: u64,
        zstd_body: Bytes,
    ) -> Result<LogAppendResponse, ApiError> {
        let path = format!("/api/v2/task/log?step={step}&offset={offset}");
        let response = self
            .send(
                Method::POST,
                &path,
                auth,
                Some(("application/zstd", zstd_body)),
                None,
            )
            .await?;
        self.decode(Method::POST, &path, &response)
    }

    /// `POST /api/v2/task/step` (task token): a step started or finished.
    pub async fn step_event(&self, auth: &Auth, event: &StepEvent) -> Result<(), ApiError> {
        self.post::<_, serde_json::Value>("/api/v2/task/step", auth, event)
            .await?;
        Ok(())
    }

    /// `POST /api/v2/task/complete` (task token): the task's result.
    pub async fn complete(&self, auth: &Auth, request: &CompleteRequest) -> Result<(), ApiError> {
        self.post::<_, serde_json::Value>("/api/v2/task/complete", auth, request)
            .await?;
        Ok(())
    }

    // ---- admin API ----

    /// `POST /api/v3/runner/resource`.
    pub async fn create_resource_class(
        &self,
        auth: &Auth,
        request: &CreateResourceClass,
    ) -> Result<ResourceClass, ApiError> {
        self.post("/api/v3/runner/resource", auth, request).await
    }

    /// `GET /api/v3/runner/resource?namespace=`.
    pub async fn resource_classes(
        &self,
        auth: &Auth,
        namespace: &str,
    ) -> Result<Vec<ResourceClass>, ApiError> {
        let path = format!(
            "/api/v3/runner/resource?namespace={}",
            encode_component(namespace)
        );
        Ok(self.get::<Items<ResourceClass>>(&path, auth).await?.items)
    }

    /// `DELETE /api/v3/runner/resource/{id}`: refused (409) while the class has tokens.
    pub async fn delete_resource_class(&self, auth: &Auth, id: &str) -> Result<(), ApiError> {
        let path = format!("/api/v3/runner/resource/{}", encode_component(id));
        self.delete(&path, auth).await
    }

    /// `DELETE /api/v3/runner/resource/{id}/force`: the class and its tokens.
    pub async fn force_delete_resource_class(&self, auth: &Auth, id: &str) -> Result<(), ApiError> {
        let path = format!("/api/v3/runner/resource/{}/force", encode_component(id));
        self.delete(&path, auth).await
    }

    /// `POST /api/v3/runner/token`: the answer is the only one that shows the token.
    pub async fn create_token(
        &self,
        auth: &Auth,
        request: &CreateToken,
    ) -> Result<Token, ApiError> {
        self.post("/api/v3/runner/token", auth, request).await
    }

    /// `GET /api/v3/runner/token?resource-class=`.
    pub async fn tokens(&self, auth: &Auth, resource_class: &str) -> Result<Vec<Token>, ApiError> {
        let path = format!(
            "/api/v3/runner/token?resource-class={}",
            encode_component(resource_class)
        );
        Ok(self.get::<Items<Token>>(&path, auth).await?.items)
    }

    /// `DELETE /api/v3/runner/token/{id}`.
    pub async fn delete_token(&self, auth: &Auth, id: &str) -> Result<(), ApiError> {
        let path = format!("/api/v3/runner/token/{}", encode_component(id));
        self.delete(&path, auth).await
    }

    /// `GET /api/v3/runner?resource-class=|namespace=`.
    pub async fn instances(
        &self,
        auth: &Auth,
        filter: InstanceFilter<'_>,
    ) -> Result<Vec<RunnerInstance>, ApiError> {
        let query = match filter {
            InstanceFilter::ResourceClass(name) => {
                format!("resource-class={}", encode_component(name))
            }
            InstanceFilter::Namespace(name) => format!("namespace={}", encode_component(name)),
        };
        let path = format!("/api/v3/runner?{query}");
        Ok(self.get::<Items<RunnerInstance>>(&path, auth).await?.items)
    }

    /// `GET /api/v3/runner/tasks?resource-class=`.
    pub async fn unclaimed_task_count(
        &self,
        auth: &Auth,
        resource_class: &str,
    ) -> Result<UnclaimedTaskCount, ApiError> {
        let path = format!(
            "/api/v3/runner/tasks?resource-class={}",
            encode_component(resource_class)
        );
        self.get(&path, auth).await
    }

    /// `GET /api/v3/runner/tasks/running?resource-class=`.
    pub async fn running_task_count(
        &self,
        auth: &Auth,
        resource_class: &str,
    ) -> Result<RunningTaskCount, ApiError> {
        let path = format!(
            "/api/v3/runner/tasks/running?resource-class={}",
            encode_component(resource_class)
        );
        self.get(&path, auth).await
    }

    // ---- projects and pipelines ----

    /// `POST /api/v2/project`.
    pub async fn create_project(
        &self,
        auth: &Auth,
        request: &CreateProject,
    ) -> Result<Project, ApiError> {
        self.post("/api/v2/project", auth, request).await
    }

    /// `GET /api/v2/project/{slug}`.
    pub async fn project(&self, auth: &Auth, slug: &str) -> Result<Project, ApiError> {
        self.get(&format!("/api/v2/project/{}", slug_path(slug)), auth)
            .await
    }

    /// `POST /api/v2/project/{slug}/pipeline`.
    pub async fn trigger_pipeline(
        &self,
        auth: &Auth,
        slug: &str,
        request: &TriggerPipeline,
    ) -> Result<PipelineCreated, ApiError> {
        let path = format!("/api/v2/project/{}/pipeline", slug_path(slug));
        self.post(&path, auth, request).await
    }

    /// `POST /api/v2/pipeline/continue`: a setup job's continuation (the key authenticates).
    pub async fn continue_pipeline(
        &self,
        request: &ContinuePipeline,
    ) -> Result<Option<String>, ApiError> {
        let answer: serde_json::Value = self
            .post("/api/v2/pipeline/continue", &Auth::None, request)
            .await?;
        Ok(message_of(&answer))
    }

    /// `GET /api/v2/pipeline/{id}`.
    pub async fn pipeline(&self, auth: &Auth, id: &str) -> Result<Pipeline, ApiError> {
        self.get(&format!("/api/v2/pipeline/{}", encode_component(id)), auth)
            .await
    }

    /// `GET /api/v2/project/{slug}/pipeline/{number}`.
    pub async fn project_pipeline(
        &self,
        auth: &Auth,
        slug: &str,
        number: u64,
    ) -> Result<Pipeline, ApiError> {
        self.get(
            &format!("/api/v2/project/{}/pipeline/{number}", slug_path(slug)),
            auth,
        )
        .await
    }

    /// `GET /api/v2/pipeline/{id}/workflow`.
    pub async fn workflows(
        &self,
        auth: &Auth,
        pipeline_id: &str,
    ) -> Result<Vec<Workflow>, ApiError> {
        let path = format!(
            "/api/v2/pipeline/{}/workflow",
            encode_component(pipeline_id)
        );
        Ok(self.get::<Items<Workflow>>(&path, auth).await?.items)
    }

    /// `GET /api/v2/workflow/{id}/job`.
    pub async fn jobs(&self, auth: &Auth, workflow_id: &str) -> Result<Vec<Job>, ApiError> {
        let path = format!("/api/v2/workflow/{}/job", encode_component(workflow_id));
        Ok(self.get::<Items<Job>>(&path, auth).await?.items)
    }

    /// `GET /api/v2/job/{id}`: the job with its steps.
    pub async fn job(&self, auth: &Auth, id: &str) -> Result<JobDetail, ApiError> {
        self.get(&format!("/api/v2/job/{}", encode_component(id)), auth)
            .await
    }

    /// `GET /api/v2/project/{slug}/job/{number}`: CircleCI's job details, as JSON.
    pub async fn project_job(
        &self,
        auth: &Auth,
        slug: &str,
        number: u64,
    ) -> Result<serde_json::Value, ApiError> {
        self.get(
            &format!("/api/v2/project/{}/job/{number}", slug_path(slug)),
            auth,
        )
        .await
    }

    /// `GET /api/v2/job/{id}?node=N`: the job with the steps of its node `node`.
    pub async fn job_node(&self, auth: &Auth, id: &str, node: u32) -> Result<JobDetail, ApiError> {
        self.get(
            &format!("/api/v2/job/{}?node={node}", encode_component(id)),
            auth,
        )
        .await
    }

    /// `GET /api/v2/job/{id}/step/{index}/log?offset=`: one page of the step's log from
    /// `offset`; empty once `offset` reached the stored length.
    pub async fn step_log_page(
        &self,
        auth: &Auth,
        job_id: &str,
        step: u32,
        offset: u64,
    ) -> Result<Bytes, ApiError> {
        self.node_step_log_page(auth, job_id, 0, step, offset).await
    }

    /// [`Client::step_log_page`] of node `node` of a parallel job.
    pub async fn node_step_log_page(
        &self,
        auth: &Auth,
        job_id: &str,
        node: u32,
        step: u32,
        offset: u64,
    ) -> Result<Bytes, ApiError> {
        // Node 0 is the default: its URL stays the one older servers answer.
        let node = if node == 0 {
            String::new()
        } else {
            format!("&node={node}")
        };
        let path = format!(
            "/api/v2/job/{}/step/{step}/log?offset={offset}{node}",
            encode_component(job_id)
        );
        Ok(self.send(Method::GET, &path, auth, None, None).await?.body)
    }

    /// `PUT /api/v2/task/artifact?path=`: streams `body` as the task's artifact at `path`.
    pub async fn upload_artifact(
        &self,
        auth: &Auth,
        path: &str,
        body: crate::client::Body,
    ) -> Result<(), ApiError> {
        let path = format!("/api/v2/task/artifact?path={}", encode_component(path));
        self.upload(Method::PUT, &path, auth, "application/octet-stream", body)
            .await?;
        Ok(())
    }

    /// `PUT /api/v2/task/cache?key=` (task token): streams `body` as the project's cache `key`.
    /// A key that exists is never overwritten: the server answers 409 before reading the body,
    /// which comes back as [`ApiError::Status`] with [`StatusCode::CONFLICT`]; an archive over
    /// the server's size limit is 413.
    pub async fn upload_cache(
        &self,
        auth: &Auth,
        key: &str,
        body: crate::client::Body,
    ) -> Result<StoredBlob, ApiError> {
        let path = format!("/api/v2/task/cache?key={}", encode_component(key));
        let response = self
            .upload(Method::PUT, &path, auth, "application/zstd", body)
            .await?;
        self.decode(Method::PUT, &path, &response)
    }

    /// `GET /api/v2/task/cache?key=P1&key=P2...` (task token): the most recently saved cache of
    /// the task's project whose key starts with the first prefix that matches any, streamed, and
    /// the key it was saved under (the `x-bosun-cache-key` header); `None` when nothing matches
    /// (404).
    pub async fn download_cache(
        &self,
        auth: &Auth,
        prefixes: &[String],
    ) -> Result<Option<(String, crate::client::Download)>, ApiError> {
        let query: Vec<String> = prefixes
            .iter()
            .map(|prefix| format!("key={}", encode_component(prefix)))
            .collect();
        let path = format!("/api/v2/task/cache?{}", query.join("&"));
        match self.download(Method::GET, &path, auth).await {
            Ok(download) => {
                let key = download
                    .headers()
                    .get(CACHE_KEY_HEADER)
                    .and_then(|value| value.to_str().ok())
                    .map(decode_component)
                    .ok_or_else(|| ApiError::Decode {
                        method: Method::GET,
                        url: self.url(&path),
                        message: format!("the answer has no `{CACHE_KEY_HEADER}` header"),
                    })?;
                Ok(Some((key, download)))
            }
            Err(err) if err.status() == Some(StatusCode::NOT_FOUND) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// `PUT /api/v2/task/workspace` (task token): streams `body` as one workspace layer of the
    /// task's job.
    pub async fn upload_workspace_layer(
        &self,
        auth: &Auth,
        body: crate::client::Body,
    ) -> Result<StoredBlob, ApiError> {
        let path = "/api/v2/task/workspace";
        let response = self
            .upload(Method::PUT, path, auth, "application/zstd", body)
            .await?;
        self.decode(Method::PUT, path, &response)
    }

    /// `GET /api/v2/task/workspace` (task token): the layers the task's `attach_workspace`
    /// applies, as the JSON of a `bosun_protocol::task::WorkspaceManifest`, streamed as bytes
    /// (the launch-agent relays it without reading it).
    pub async fn workspace_manifest(
        &self,
        auth: &Auth,
    ) -> Result<crate::client::Download, ApiError> {
        self.download(Method::GET, "/api/v2/task/workspace", auth)
            .await
    }

    /// `GET /api/v2/task/workspace/{layer}` (task token): one layer of the manifest, streamed;
    /// `None` when it is gone (404: expired, or not upstream of the task's job).
    pub async fn download_workspace_layer(
        &self,
        auth: &Auth,
        layer: &str,
    ) -> Result<Option<crate::client::Download>, ApiError> {
        let path = format!("/api/v2/task/workspace/{}", encode_component(layer));
        match self.download(Method::GET, &path, auth).await {
            Ok(download) => Ok(Some(download)),
            Err(err) if err.status() == Some(StatusCode::NOT_FOUND) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// `GET /api/v2/project/{slug}/cache` (admin): the project's caches, newest first.
    pub async fn project_caches(&self, auth: &Auth, slug: &str) -> Result<CacheList, ApiError> {
        self.get(&format!("/api/v2/project/{}/cache", slug_path(slug)), auth)
            .await
    }

    /// `DELETE /api/v2/project/{slug}/cache?prefix=` (admin): deletes every cache of the project
    /// whose key starts with `prefix` (all of them for an empty prefix).
    pub async fn delete_project_caches(
        &self,
        auth: &Auth,
        slug: &str,
        prefix: &str,
    ) -> Result<CacheDeleted, ApiError> {
        let path = format!(
            "/api/v2/project/{}/cache?prefix={}",
            slug_path(slug),
            encode_component(prefix)
        );
        self.json::<(), _>(Method::DELETE, &path, auth, None).await
    }

    /// `PUT /api/v2/task/tests?source=` (task token): the JSON of a
    /// `bosun_protocol::task::TestResults`, streamed, stored all or nothing.
    pub async fn upload_test_results(
        &self,
        auth: &Auth,
        source: &str,
        body: crate::client::Body,
    ) -> Result<StoredTests, ApiError> {
        let path = format!("/api/v2/task/tests?source={}", encode_component(source));
        let response = self
            .upload(Method::PUT, &path, auth, "application/json", body)
            .await?;
        self.decode(Method::PUT, &path, &response)
    }

    /// `GET /api/v2/task/timings` (task token): the test results of the most recent successful
    /// run of the task's job (same branch, else the default branch), streamed as the JSON of a
    /// `bosun_protocol::task::TestResults`; `None` when there is none (404).
    pub async fn timings(&self, auth: &Auth) -> Result<Option<crate::client::Download>, ApiError> {
        match self
            .download(Method::GET, "/api/v2/task/timings", auth)
            .await
        {
            Ok(download) => Ok(Some(download)),
            Err(err) if err.status() == Some(StatusCode::NOT_FOUND) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// `GET /api/v2/project/{slug}/{job-number}/tests`: CircleCI's test-results listing.
    pub async fn project_job_tests(
        &self,
        auth: &Auth,
        slug: &str,
        job_number: u64,
    ) -> Result<TestList, ApiError> {
        let path = format!("/api/v2/project/{}/{job_number}/tests", slug_path(slug));
        self.get(&path, auth).await
    }

    /// `GET /api/v2/job/{id}/tests`: the same listing, by bosun's job id.
    pub async fn job_tests(&self, auth: &Auth, job_id: &str) -> Result<TestList, ApiError> {
        let path = format!("/api/v2/job/{}/tests", encode_component(job_id));
        self.get(&path, auth).await
    }

    /// `GET /api/v2/job/{id}/artifacts`: the job's artifacts.
    pub async fn job_artifacts(&self, auth: &Auth, job_id: &str) -> Result<ArtifactList, ApiError> {
        let path = format!("/api/v2/job/{}/artifacts", encode_component(job_id));
        self.get(&path, auth).await
    }

    /// `GET /api/v2/project/{slug}/{job-number}/artifacts`: CircleCI's artifact listing.
    pub async fn project_job_artifacts(
        &self,
        auth: &Auth,
        slug: &str,
        job_number: u64,
    ) -> Result<ArtifactList, ApiError> {
        let slug: Vec<String> = slug.split('/').map(encode_component).collect();
        let path = format!("/api/v2/project/{}/{job_number}/artifacts", slug.join("/"));
        self.get(&path, auth).await
    }

    /// Streams an artifact's bytes from the `url` a listing gave. Only its path is used, on
    /// this client's server: the token never goes to another host, whatever the URL says (the
    /// server's `--public-url` may name it differently than this client does).
    pub async fn download_artifact(
        &self,
        auth: &Auth,
        url: &str,
    ) -> Result<crate::client::Download, ApiError> {
        let path = match url.find("/api/") {
            Some(start) => &url[start..],
            None => url,
        };
        self.download(Method::GET, path, auth).await
    }

    /// `POST /api/v2/job/{id}/cancel`: the server's sentence about what it did, if it said one.
    pub async fn cancel_job(&self, auth: &Auth, id: &str) -> Result<Option<String>, ApiError> {
        let path = format!("/api/v2/job/{}/cancel", encode_component(id));
        let answer: serde_json::Value = self.json::<(), _>(Method::POST, &path, auth, None).await?;
        Ok(message_of(&answer))
    }

    // ---- secrets: project variables, contexts, checkout and SSH keys ----

    /// `POST /api/v2/project/{slug}/envvar`: sets a variable (the answer shows it masked).
    pub async fn set_project_env(
        &self,
        auth: &Auth,
        slug: &str,
        request: &CreateEnvVar,
    ) -> Result<EnvVar, ApiError> {
        let path = format!("/api/v2/project/{}/envvar", slug_path(slug));
        self.post(&path, auth, request).await
    }

    /// `GET /api/v2/project/{slug}/envvar`: names and masked values.
    pub async fn project_env(&self, auth: &Auth, slug: &str) -> Result<Page<EnvVar>, ApiError> {
        let path = format!("/api/v2/project/{}/envvar", slug_path(slug));
        self.get(&path, auth).await
    }

    /// `DELETE /api/v2/project/{slug}/envvar/{name}`.
    pub async fn delete_project_env(
        &self,
        auth: &Auth,
        slug: &str,
        name: &str,
    ) -> Result<(), ApiError> {
        let path = format!(
            "/api/v2/project/{}/envvar/{}",
            slug_path(slug),
            encode_component(name)
        );
        self.delete(&path, auth).await
    }

    /// `GET /api/v2/me/collaborations`: the organizations (namespaces) the caller sees.
    pub async fn collaborations(&self, auth: &Auth) -> Result<Vec<Collaboration>, ApiError> {
        self.get("/api/v2/me/collaborations", auth).await
    }

    /// `POST /api/v2/context`.
    pub async fn create_context(
        &self,
        auth: &Auth,
        request: &CreateContext,
    ) -> Result<Context, ApiError> {
        self.post("/api/v2/context", auth, request).await
    }

    /// `GET /api/v2/context?owner-slug=`: the contexts of an organization (namespace).
    pub async fn contexts(&self, auth: &Auth, owner: &str) -> Result<Page<Context>, ApiError> {
        let path = format!("/api/v2/context?owner-slug={}", encode_component(owner));
        self.get(&path, auth).await
    }

    /// `DELETE /api/v2/context/{id}`.
    pub async fn delete_context(&self, auth: &Auth, id: &str) -> Result<(), ApiError> {
        self.delete(&format!("/api/v2/context/{}", encode_component(id)), auth)
            .await
    }

    /// `PUT /api/v2/context/{id}/environment-variable/{name}`.
    pub async fn set_context_env(
        &self,
        auth: &Auth,
        id: &str,
        name: &str,
        value: &str,
    ) -> Result<ContextEnvVar, ApiError> {
        let path = format!(
            "/api/v2/context/{}/environment-variable/{}",
            encode_component(id),
            encode_component(name)
        );
        let body = SetContextEnvVar {
            value: value.to_owned(),
        };
        self.json(Method::PUT, &path, auth, Some(&body)).await
    }

    /// `GET /api/v2/context/{id}/environment-variable`.
    pub async fn context_env(
        &self,
        auth: &Auth,
        id: &str,
    ) -> Result<Page<ContextEnvVar>, ApiError> {
        let path = format!(
            "/api/v2/context/{}/environment-variable",
            encode_component(id)
        );
        self.get(&path, auth).await
    }

    /// `DELETE /api/v2/context/{id}/environment-variable/{name}`.
    pub async fn delete_context_env(
        &self,
        auth: &Auth,
        id: &str,
        name: &str,
    ) -> Result<(), ApiError> {
        let path = format!(
            "/api/v2/context/{}/environment-variable/{}",
            encode_component(id),
            encode_component(name)
        );
        self.delete(&path, auth).await
    }

    /// `POST /api/v2/context/{id}/restrictions`.
    pub async fn add_context_restriction(
        &self,
        auth: &Auth,
        id: &str,
        request: &CreateRestriction,
    ) -> Result<Restriction, ApiError> {
        let path = format!("/api/v2/context/{}/restrictions", encode_component(id));
        self.post(&path, auth, request).await
    }

    /// `GET /api/v2/context/{id}/restrictions`.
    pub async fn context_restrictions(
        &self,
        auth: &Auth,
        id: &str,
    ) -> Result<Page<Restriction>, ApiError> {
        let path = format!("/api/v2/context/{}/restrictions", encode_component(id));
        self.get(&path, auth).await
    }

    /// `DELETE /api/v2/context/{id}/restrictions/{restriction_id}`.
    pub async fn delete_context_restriction(
        &self,
        auth: &Auth,
        id: &str,
        restriction_id: &str,
    ) -> Result<(), ApiError> {
        let path = format!(
            "/api/v2/context/{}/restrictions/{}",
            encode_component(id),
            encode_component(restriction_id)
        );
        self.delete(&path, auth).await
    }

    /// `POST /api/v2/project/{slug}/checkout-key`: a new deploy key; the answer has its public
    /// key, to add to the git host.
    pub async fn create_checkout_key(
        &self,
        auth: &Auth,
        slug: &str,
    ) -> Result<CheckoutKey, ApiError> {
        let path = format!("/api/v2/project/{}/checkout-key", slug_path(slug));
        let body = CreateCheckoutKey {
            key_type: "deploy-key".into(),
        };
        self.post(&path, auth, &body).await
    }

    /// `GET /api/v2/project/{slug}/checkout-key`.
    pub async fn checkout_keys(
        &self,
        auth: &Auth,
        slug: &str,
    ) -> Result<Page<CheckoutKey>, ApiError> {
        let path = format!("/api/v2/project/{}/checkout-key", slug_path(slug));
        self.get(&path, auth).await
    }

    /// `DELETE /api/v2/project/{slug}/checkout-key/{fingerprint}`.
    pub async fn delete_checkout_key(
        &self,
        auth: &Auth,
        slug: &str,
        fingerprint: &str,
    ) -> Result<(), ApiError> {
        let path = format!(
            "/api/v2/project/{}/checkout-key/{}",
            slug_path(slug),
            encode_component(fingerprint)
        );
        self.delete(&path, auth).await
    }

    /// `POST /api/v2/project/{slug}/ssh-key`: uploads a private key for `add_ssh_keys`.
    pub async fn add_ssh_key(
        &self,
        auth: &Auth,
        slug: &str,
        request: &CreateSshKey,
    ) -> Result<SshKeyInfo, ApiError> {
        let path = format!("/api/v2/project/{}/ssh-key", slug_path(slug));
        self.post(&path, auth, request).await
    }

    /// `GET /api/v2/project/{slug}/ssh-key`.
    pub async fn ssh_keys(&self, auth: &Auth, slug: &str) -> Result<Page<SshKeyInfo>, ApiError> {
        let path = format!("/api/v2/project/{}/ssh-key", slug_path(slug));
        self.get(&path, auth).await
    }

    /// `DELETE /api/v2/project/{slug}/ssh-key/{fingerprint}`.
    pub async fn delete_ssh_key(
        &self,
        auth: &Auth,
        slug: &str,
        fingerprint: &str,
    ) -> Result<(), ApiError> {
        let path = format!(
            "/api/v2/project/{}/ssh-key/{}",
            slug_path(slug),
            encode_component(fingerprint)
        );
        self.delete(&path, auth).await
    }

    /// `GET /api/v2/project/{slug}/known-hosts`.
    pub async fn known_hosts(&self, auth: &Auth, slug: &str) -> Result<KnownHosts, ApiError> {
        let path = format!("/api/v2/project/{}/known-hosts", slug_path(slug));
        self.get(&path, auth).await
    }

    /// `PUT /api/v2/project/{slug}/known-hosts`: replaces them (empty: trust on first use).
    pub async fn set_known_hosts(
        &self,
        auth: &Auth,
        slug: &str,
        known_hosts: &KnownHosts,
    ) -> Result<KnownHosts, ApiError> {
        let path = format!("/api/v2/project/{}/known-hosts", slug_path(slug));
        self.json(Method::PUT, &path, auth, Some(known_hosts)).await
    }

    /// `PUT /api/v2/project/{slug}/checkout-token`: sets (or with `None` removes) the token
    /// `checkout` uses for an `https://` repository.
    pub async fn set_checkout_token(
        &self,
        auth: &Auth,
        slug: &str,
        token: Option<&str>,
    ) -> Result<MessageResponse, ApiError> {
        let path = format!("/api/v2/project/{}/checkout-token", slug_path(slug));
        let body = CheckoutToken {
            token: token.map(str::to_owned),
        };
        self.json(Method::PUT, &path, auth, Some(&body)).await
    }

    // ---- users, roles and personal tokens ----

    /// `GET /api/v2/me`: the user the token acts for.
    pub async fn me(&self, auth: &Auth) -> Result<User, ApiError> {
        self.get("/api/v2/me", auth).await
    }

    /// `GET /api/v2/user`: every user with their role (admin).
    pub async fn users(&self, auth: &Auth) -> Result<Items<UserDetail>, ApiError> {
        self.get("/api/v2/user", auth).await
    }

    /// `POST /api/v2/user` (admin).
    pub async fn create_user(
        &self,
        auth: &Auth,
        request: &CreateUser,
    ) -> Result<UserDetail, ApiError> {
        self.post("/api/v2/user", auth, request).await
    }

    /// `DELETE /api/v2/user/{user}` (admin): `user` is a login or an id.
    pub async fn delete_user(&self, auth: &Auth, user: &str) -> Result<(), ApiError> {
        let path = format!("/api/v2/user/{}", encode_component(user));
        self.delete(&path, auth).await
    }

    /// `PUT /api/v2/user/{user}/role` (admin).
    pub async fn set_user_role(
        &self,
        auth: &Auth,
        user: &str,
        role: &str,
    ) -> Result<UserDetail, ApiError> {
        let path = format!("/api/v2/user/{}/role", encode_component(user));
        let body = SetRole { role: role.into() };
        self.json(Method::PUT, &path, auth, Some(&body)).await
    }

    /// `PUT /api/v2/user/{user}/project/{slug}` (admin): gives a member project `slug`.
    pub async fn grant_project(
        &self,
        auth: &Auth,
        user: &str,
        slug: &str,
    ) -> Result<UserDetail, ApiError> {
        self.project_grant(Method::PUT, auth, user, slug).await
    }

    /// `DELETE /api/v2/user/{user}/project/{slug}` (admin).
    pub async fn ungrant_project(
        &self,
        auth: &Auth,
        user: &str,
        slug: &str,
    ) -> Result<UserDetail, ApiError> {
        self.project_grant(Method::DELETE, auth, user, slug).await
    }

    async fn project_grant(
        &self,
        method: Method,
        auth: &Auth,
        user: &str,
        slug: &str,
    ) -> Result<UserDetail, ApiError> {
        let path = format!(
            "/api/v2/user/{}/project/{}",
            encode_component(user),
            slug_path(slug)
        );
        self.json::<(), UserDetail>(method, &path, auth, None).await
    }

    /// `GET /api/v2/token`: the caller's personal tokens, or `user`'s, or with `all` every
    /// user's (both admin only).
    pub async fn user_tokens(
        &self,
        auth: &Auth,
        user: Option<&str>,
        all: bool,
    ) -> Result<Items<UserToken>, ApiError> {
        let path = match (user, all) {
            (_, true) => "/api/v2/token?all=true".to_owned(),
            (Some(user), false) => format!("/api/v2/token?user={}", encode_component(user)),
            (None, false) => "/api/v2/token".to_owned(),
        };
        self.get(&path, auth).await
    }

    /// `POST /api/v2/token`: a new personal token, whose secret only this answer holds.
    pub async fn create_user_token(
        &self,
        auth: &Auth,
        request: &CreateUserToken,
    ) -> Result<CreatedUserToken, ApiError> {
        self.post("/api/v2/token", auth, request).await
    }

    /// `DELETE /api/v2/token/{id}`.
    pub async fn revoke_user_token(&self, auth: &Auth, id: &str) -> Result<(), ApiError> {
        let path = format!("/api/v2/token/{}", encode_component(id));
        self.delete(&path, auth).await
    }

    // ---- releases (admin; the runner's side below) ----

    /// `PUT /api/v2/release/{version}` (admin): the manifest and its signature. A release is
    /// immutable: the same manifest again is accepted (to upload what is missing), another is
    /// refused (409).
    pub async fn publish_release(
        &self,
        auth: &Auth,
        version: &str,
        release: &PublishRelease,
    ) -> Result<ReleaseSummary, ApiError> {
        let path = format!("/api/v2/release/{}", encode_component(version));
        self.json(Method::PUT, &path, auth, Some(release)).await
    }

    /// `PUT /api/v2/release/{version}/{platform}/{name}` (admin): one file of the manifest,
    /// streamed; the server checks its size and SHA-256 against the manifest.
    pub async fn upload_release_file(
        &self,
        auth: &Auth,
        version: &str,
        platform: &str,
        name: &str,
        body: crate::client::Body,
    ) -> Result<ReleaseSummary, ApiError> {
        let path = format!(
            "/api/v2/release/{}/{}/{}",
            encode_component(version),
            encode_component(platform),
            encode_component(name)
        );
        let response = self
            .upload(Method::PUT, &path, auth, "application/octet-stream", body)
            .await?;
        self.decode(Method::PUT, &path, &response)
    }

    /// `GET /api/v2/release` (admin): every release, newest first.
    pub async fn releases(&self, auth: &Auth) -> Result<Items<ReleaseSummary>, ApiError> {
        self.get("/api/v2/release", auth).await
    }

    /// `PUT /api/v2/orb/{namespace}/{name}/{version}`: publishes a packed orb.
    pub async fn publish_orb(
        &self,
        auth: &Auth,
        namespace: &str,
        name: &str,
        version: &str,
        source: &str,
    ) -> Result<crate::OrbPublished, ApiError> {
        let path = format!(
            "/api/v2/orb/{}/{}/{}",
            encode_component(namespace),
            encode_component(name),
            encode_component(version)
        );
        let response = self
            .send(
                Method::PUT,
                &path,
                auth,
                Some(("application/yaml", bytes::Bytes::from(source.to_owned()))),
                None,
            )
            .await?;
        self.decode(Method::PUT, &path, &response)
    }

    /// `GET /api/v2/orb[?namespace=NS]`.
    pub async fn orbs(
        &self,
        auth: &Auth,
        namespace: Option<&str>,
    ) -> Result<Items<crate::OrbListing>, ApiError> {
        let path = match namespace {
            Some(ns) => format!("/api/v2/orb?namespace={}", encode_component(ns)),
            None => "/api/v2/orb".to_owned(),
        };
        self.get(&path, auth).await
    }

    /// `GET /api/v2/orb/{namespace}/{name}`.
    pub async fn orb_info(
        &self,
        auth: &Auth,
        namespace: &str,
        name: &str,
    ) -> Result<crate::OrbInfo, ApiError> {
        let path = format!(
            "/api/v2/orb/{}/{}",
            encode_component(namespace),
            encode_component(name)
        );
        self.get(&path, auth).await
    }

    /// `GET /api/v2/orb/resolve?reference=REF`: a registry reference (`ns/name@1.2`) or a URL
    /// orb, resolved as a pipeline would; `Ok(None)` when there is no such orb.
    pub async fn resolve_orb(
        &self,
        auth: &Auth,
        reference: &str,
    ) -> Result<Option<crate::OrbSource>, ApiError> {
        let path = format!(
            "/api/v2/orb/resolve?reference={}",
            encode_component(reference)
        );
        match self.get(&path, auth).await {
            Ok(source) => Ok(Some(source)),
            Err(err) if err.status() == Some(StatusCode::NOT_FOUND) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// `POST /api/v2/release/promote` (admin): agents of the fleet (or of one resource class)
    /// are to run `version`.
    pub async fn promote_release(
        &self,
        auth: &Auth,
        request: &PromoteRelease,
    ) -> Result<Promotion, ApiError> {
        self.post("/api/v2/release/promote", auth, request).await
    }

    /// `POST /api/v2/release/rollback` (admin): back to the version promoted before.
    pub async fn rollback_release(
        &self,
        auth: &Auth,
        request: &PromoteRelease,
    ) -> Result<Promotion, ApiError> {
        self.post("/api/v2/release/rollback", auth, request).await
    }

    /// `GET /api/v3/runner/release?os=&arch=[&version=]` (runner token): the release meant for
    /// the runner's resource class, or `version`; `None` when there is none (404).
    pub async fn runner_release(
        &self,
        auth: &Auth,
        os: &str,
        arch: &str,
        version: Option<&str>,
    ) -> Result<Option<RunnerRelease>, ApiError> {
        let mut path = format!(
            "/api/v3/runner/release?os={}&arch={}",
            encode_component(os),
            encode_component(arch)
        );
        if let Some(version) = version {
            path.push_str(&format!("&version={}", encode_component(version)));
        }
        match self.get(&path, auth).await {
            Ok(release) => Ok(Some(release)),
            Err(err) if err.status() == Some(StatusCode::NOT_FOUND) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Streams a release file from the path a [`RunnerRelease`] gave (on this client's server
    /// only, as [`Client::download_artifact`]).
    pub async fn download_release_file(
        &self,
        auth: &Auth,
        url: &str,
    ) -> Result<crate::client::Download, ApiError> {
        let path = match url.find("/api/") {
            Some(start) => &url[start..],
            None => url,
        };
        self.download(Method::GET, path, auth).await
    }

    /// A `DELETE` whose answer says nothing the caller needs.
    async fn delete(&self, path: &str, auth: &Auth) -> Result<(), ApiError> {
        self.json::<(), serde_json::Value>(Method::DELETE, path, auth, None)
            .await?;
        Ok(())
    }
}

/// The header of a cache download naming the key that matched, percent-encoded.
pub const CACHE_KEY_HEADER: &str = "x-bosun-cache-key";

/// The `message` of an answer like `{"message": "..."}`.
fn message_of(answer: &serde_json::Value) -> Option<String> {
    answer
        .get("message")
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::slug_path;

    #[test]
    fn slug_paths_keep_slashes_and_encode_the_rest() {
        assert_eq!(slug_path("local/acme/widgets"), "local/acme/widgets");
        assert_eq!(slug_path("gh/a b/c?d"), "gh/a%20b/c%3Fd");
    }
}
