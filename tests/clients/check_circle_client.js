#!/usr/bin/env node
// Drives bosun-server with two third-party npm clients:
//   circle-client@0.1.7  (API v2; base URL is the static `CircleCI.baseUrl`, set below)
//   circleci-api@4.1.4   (API v1.1 only; `circleHost` option; token sent as ?circle-token=)
// Env: BOSUN_URL, BOSUN_TOKEN, BOSUN_SLUG (gh/acme/widgets: a project with >= 1 finished
// pipeline whose first numbered job stored >= 1 artifact and >= 1 test result).
// Optional: BOSUN_JOB_NUMBER, BOSUN_PIPELINE_ID (the finished pipeline to use), BOSUN_SKIP_TRIGGER=1. NODE_PATH must reach the installed
// node_modules (e.g. NODE_PATH=/tmp/clients/npm/node_modules).
// Prints one PASS/FAIL line per call, then `N passed, N failed`; exit 1 on any FAIL.
'use strict';

const CircleCIv2 = require('circle-client').default;
const { CircleCI: CircleCIv1 } = require('circleci-api');

const URL = process.env.BOSUN_URL.replace(/\/+$/, '');
const TOKEN = process.env.BOSUN_TOKEN;
const SLUG = process.env.BOSUN_SLUG;
const [VCS, ORG, REPO] = SLUG.split('/');
const FINAL = new Set(['success', 'failed', 'error', 'canceled', 'not_run', 'unauthorized', 'failing']);

CircleCIv2.baseUrl = `${URL}/api/v2`; // the only way to point circle-client elsewhere
const v2 = new CircleCIv2(TOKEN, SLUG); // slug is sent encodeURIComponent'd: gh%2Facme%2Fwidgets
const v1 = new CircleCIv1({ token: TOKEN, vcs: { type: VCS, owner: ORG, repo: REPO }, circleHost: `${URL}/api/v1.1` });

const state = {};
const SKIPPED = Symbol('skipped'); // returned by a check the caller turned off: SKIP, not PASS
let passed = 0;
let failed = 0;

function need(key) {
  if (!(key in state)) throw new Error(`needs \`${key}\` from an earlier check that failed`);
  return state[key];
}

function has(obj, ...fields) {
  if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) {
    throw new Error(`expected an object, got ${JSON.stringify(obj).slice(0, 200)}`);
  }
  const missing = fields.filter((f) => !(f in obj));
  if (missing.length) throw new Error(`missing fields ${missing} in ${JSON.stringify(obj).slice(0, 300)}`);
}

function assert(cond, msg) {
  if (!cond) throw new Error(msg);
}

function nonempty(list, what) {
  assert(Array.isArray(list), `${what}: expected a list, got ${JSON.stringify(list).slice(0, 200)}`);
  assert(list.length > 0, `${what}: empty`);
  return list;
}

/** A v2 page: items plus a next_page_token key (null on the last page). */
function page(p, what) {
  has(p, 'items', 'next_page_token');
  return p.items;
}

/** Every item of a circle-client list method, following next_page_token. */
async function all(list) {
  const items = [];
  let pageToken;
  for (let n = 0; n < 100; n++) {
    const p = await list({ pageToken });
    items.push(...page(p));
    if (!p.next_page_token) return items;
    pageToken = p.next_page_token;
  }
  throw new Error('more than 100 pages');
}

/** Error text with any `circle-token=` query value blanked (circleci-api puts the token there). */
function describe(err) {
  return describeRaw(err).replace(/circle-token=[^&\s"']*/g, 'circle-token=REDACTED');
}

function describeRaw(err) {
  if (err.response && err.status !== undefined) return `${err.message} [HTTP ${err.status} ${err.response.url}]`;
  if (err.response && err.response.status) {
    const r = err.response;
    return `${err.message} [${r.config.method.toUpperCase()} ${r.config.url} -> ${r.status} ${JSON.stringify(r.data).slice(0, 200)}]`;
  }
  return err.message || String(err);
}

async function check(name, fn) {
  try {
    if ((await fn()) === SKIPPED) {
      console.log(`SKIP ${name}`);
      return;
    }
    passed++;
    console.log(`PASS ${name}`);
  } catch (err) {
    failed++;
    console.log(`FAIL ${name}: ${describe(err)}`);
  }
}

const ENV_NAME = `BOSUN_JS_CHECK_${Math.random().toString(16).slice(2, 10).toUpperCase()}`;
const CTX_NAME = `bosun-js-check-${Math.random().toString(16).slice(2, 10)}`;

const checks = {
  // --- user (v2) ---
  async me() {
    const me = await v2.getMe(); // GET /api/v2/me
    has(me, 'id', 'login', 'name');
    state.userId = me.id;
  },
  async collaborations() {
    const orgs = nonempty(await v2.getCollaborations(), 'collaborations'); // GET /api/v2/me/collaborations
    orgs.forEach((o) => has(o, 'id', 'vcs-type', 'name', 'avatar_url', 'slug'));
    const mine = orgs.find((o) => o.name === ORG);
    assert(mine, `org ${ORG} not in ${orgs.map((o) => o.name)}`);
    state.orgId = mine.id;
  },
  async userById() {
    const u = await v2.getUser(need('userId')); // GET /api/v2/user/{id}
    has(u, 'id', 'login', 'name');
  },
  // --- project ---
  async project() {
    const p = await v2.getProject(); // GET /api/v2/project/gh%2Facme%2Fwidgets
    has(p, 'slug', 'name', 'organization_name', 'organization_slug', 'organization_id', 'vcs_info');
    has(p.vcs_info, 'vcs_url', 'provider', 'default_branch');
    state.defaultBranch = p.vcs_info.default_branch;
  },
  // --- pipelines ---
  async projectPipelines() {
    // GET /api/v2/project/{escaped slug}/pipeline?page-token=...
    const items = nonempty(await all((o) => v2.listProjectPipelines(o)), 'pipelines');
    items.forEach((p) => has(p, 'id', 'number', 'project_slug', 'state', 'created_at', 'trigger', 'vcs', 'errors'));
    state.pipelines = items;
  },
  async pickFinishedPipeline() {
    // BOSUN_PIPELINE_ID names one instead, for servers that cannot list pipelines yet.
    const id = process.env.BOSUN_PIPELINE_ID;
    const candidates = id ? [await v2.getPipeline(id)] : need('pipelines');
    for (const p of candidates) {
      const wfs = await all((o) => v2.listPipelineWorkflows(p.id, o)); // GET /api/v2/pipeline/{id}/workflow
      if (!wfs.length || wfs.some((w) => !FINAL.has(w.status))) continue;
      for (const w of wfs) {
        const jobs = await all((o) => v2.listWorkflowJobs(w.id, o)); // GET /api/v2/workflow/{id}/job
        const j = jobs.find((x) => x.job_number !== undefined && x.job_number !== null);
        if (j) {
          Object.assign(state, { pipeline: p, workflow: w, job: j });
          return;
        }
      }
    }
    throw new Error('no finished pipeline with a numbered job');
  },
  async pipelinesByBranch() {
    const branch = need('pipeline').vcs.branch;
    const items = nonempty(page(await v2.listProjectPipelines({ branch })), `pipelines of ${branch}`); // ?branch=
    assert(items.every((p) => p.vcs.branch === branch), 'a pipeline of another branch came back');
  },
  async pipelinesMine() {
    const items = page(await v2.listOwnProjectPipelines()); // GET .../pipeline/mine
    items.forEach((p) => has(p, 'id', 'number', 'state'));
  },
  async orgPipelines() {
    const items = nonempty(page(await v2.listPipelines(`${VCS}/${ORG}`)), 'org pipelines'); // GET /api/v2/pipeline?org-slug=
    assert(items.some((p) => p.project_slug === SLUG), 'project pipelines missing from org list');
  },
  async pipelineByNumber() {
    const p = await v2.getProjectPipeline(need('pipeline').number); // GET .../pipeline/{number}
    assert(p.id === state.pipeline.id, `${p.id} != ${state.pipeline.id}`);
  },
  async pipelineById() {
    const p = await v2.getPipeline(need('pipeline').id); // GET /api/v2/pipeline/{id}
    has(p, 'id', 'number', 'project_slug', 'state', 'trigger', 'vcs');
  },
  async pipelineConfig() {
    const c = await v2.getPipelineConfig(need('pipeline').id); // GET /api/v2/pipeline/{id}/config
    has(c, 'source', 'compiled');
    assert(c.source.includes('jobs') && c.compiled.includes('jobs'), 'config text lacks `jobs`');
  },
  // --- workflows & jobs ---
  async workflow() {
    const w = await v2.getWorkflow(need('workflow').id); // GET /api/v2/workflow/{id}
    has(w, 'id', 'name', 'status', 'pipeline_id', 'pipeline_number', 'project_slug', 'created_at', 'stopped_at');
  },
  async workflowJobs() {
    const jobs = nonempty(page(await v2.listWorkflowJobs(need('workflow').id)), 'workflow jobs');
    jobs.forEach((j) => has(j, 'id', 'name', 'status', 'type', 'dependencies', 'project_slug'));
  },
  async jobDetails() {
    const j = await v2.getJob(jobNumber()); // GET /api/v2/project/{escaped}/job/{n}
    has(j, 'number', 'name', 'status', 'web_url', 'project', 'pipeline', 'latest_workflow', 'executor',
      'parallel_runs', 'created_at', 'contexts', 'organization', 'messages');
  },
  async jobArtifacts() {
    const items = nonempty(page(await v2.listJobArtifacts(jobNumber())), 'v2 artifacts'); // GET .../{n}/artifacts
    items.forEach((a) => has(a, 'path', 'node_index', 'url'));
  },
  async jobTests() {
    const items = nonempty(page(await v2.listJobTests(jobNumber())), 'v2 tests'); // GET .../{n}/tests
    items.forEach((t) => has(t, 'message', 'source', 'run_time', 'file', 'result', 'name', 'classname'));
  },
  async cancelFinishedJob() {
    // circle-client demands HTTP 202 (CircleCI's code). A finished job: bosun answers 409 {"message"}.
    try {
      await v2.cancelJob(jobNumber()); // POST .../job/{n}/cancel
    } catch (err) {
      if (err.status === 409) return;
      throw err;
    }
  },
  async triggerAndCancelJob() {
    // A job not finished (no runner takes it, or it is running): circle-client wants 202.
    const wf = await triggerAndWaitWorkflow();
    if (wf === SKIPPED) return SKIPPED;
    const deadline = Date.now() + 30000;
    while (Date.now() < deadline) {
      const j = page(await v2.listWorkflowJobs(wf.id)).find((x) => x.job_number !== undefined && x.job_number !== null);
      if (j) {
        try {
          await v2.cancelJob(j.job_number); // POST .../job/{n}/cancel
        } catch (err) {
          // circle-client 0.1.7 wants 202 here; CircleCI's OpenAPI document answers 200 (a
          // MessageResponse), as bosun does. Accept exactly that, and only if the job did end.
          if (err.status !== 200) throw err;
          let after = await v2.getJob(j.job_number);
          for (let i = 0; i < 30 && !['canceled', 'success', 'failed'].includes(after.status); i++) {
            await new Promise((r) => setTimeout(r, 1000));
            after = await v2.getJob(j.job_number);
          }
          assert(after.status === 'canceled', `the job is ${after.status} 30 s after its cancel`);
        }
        return undefined;
      }
      await new Promise((r) => setTimeout(r, 1000));
    }
    throw new Error('no job of the new pipeline got a number in 30 s');
  },
  async triggerAndCancelWorkflow() {
    const wf = await triggerAndWaitWorkflow();
    if (wf === SKIPPED) return SKIPPED;
    await v2.cancelWorkflow(wf.id); // POST /api/v2/workflow/{id}/cancel; wants 202
    return undefined;
  },
  // --- project env vars (v2) ---
  async envCreate() {
    const v = await v2.createEnvVar(ENV_NAME, 'js-secret-5678'); // POST .../envvar {"name","value"}; wants 201
    has(v, 'name', 'value');
    assert(v.value !== 'js-secret-5678', 'value came back unmasked');
  },
  async envList() {
    const names = (await all((o) => v2.listEnvVars(o))).map((v) => v.name);
    assert(names.includes(ENV_NAME), `${ENV_NAME} not in ${names}`);
  },
  async envGet() {
    const v = await v2.getEnvVar(ENV_NAME); // GET .../envvar/{name}
    has(v, 'name', 'value');
  },
  async envDelete() {
    await v2.deleteEnvVar(ENV_NAME); // DELETE .../envvar/{name}; wants 200 + JSON body
  },
  // --- checkout keys (v2) ---
  async checkoutKeyCreate() {
    const k = await v2.createCheckoutKey('deploy-key'); // POST .../checkout-key {"type"}; wants 201
    has(k, 'public-key', 'type', 'fingerprint', 'preferred', 'created-at');
    state.fingerprint = k.fingerprint;
  },
  async checkoutKeyList() {
    const keys = nonempty(await all((o) => v2.listCheckoutKeys(o)), 'checkout keys');
    assert(keys.some((k) => k.fingerprint === need('fingerprint')), 'new key not listed');
  },
  async checkoutKeyGet() {
    has(await v2.getCheckoutKey(need('fingerprint')), 'public-key', 'fingerprint');
  },
  async checkoutKeyDelete() {
    await v2.deleteCheckoutKey(need('fingerprint')); // fingerprint sent raw (contains ':')
  },
  // --- contexts (v2) ---
  async contextCreate() {
    // POST /api/v2/context {"name", "owner": {"id": <org id>, "type": "organization"}}; wants 200
    const c = await v2.createContext(CTX_NAME, { id: need('orgId'), type: 'organization' });
    has(c, 'id', 'name', 'created_at');
    state.contextId = c.id;
  },
  async contextListBySlug() {
    const items = await all((o) => v2.listContexts({ ownerSlug: `${VCS}/${ORG}`, ...o })); // ?owner-slug=gh/acme
    assert(items.some((c) => c.id === need('contextId')), 'new context not listed by owner-slug');
  },
  async contextListById() {
    const items = await all((o) => v2.listContexts({ ownerId: need('orgId'), ownerType: 'organization', ...o }));
    assert(items.some((c) => c.id === need('contextId')), 'new context not listed by owner-id');
  },
  async contextGet() {
    has(await v2.getContext(need('contextId')), 'id', 'name', 'created_at');
  },
  async contextEnvPut() {
    const v = await v2.createContextEnvVar(need('contextId'), 'CTX_VAR', 'v1'); // PUT; wants 200
    has(v, 'variable', 'context_id', 'created_at');
  },
  async contextEnvList() {
    const items = await all((o) => v2.listContextEnvVars(need('contextId'), o));
    assert(items.map((v) => v.variable).join() === 'CTX_VAR', JSON.stringify(items));
  },
  async contextEnvDelete() {
    await v2.deleteContextEnvVar(need('contextId'), 'CTX_VAR');
  },
  async contextDelete() {
    await v2.deleteContext(need('contextId'));
  },
  // --- v1.1 through circleci-api (token only in ?circle-token=) ---
  async v1Me() {
    has(await v1.me(), 'login'); // GET /api/v1.1/me?circle-token=
  },
  async v1Projects() {
    const ps = nonempty(await v1.projects(), 'v1.1 projects'); // GET /api/v1.1/projects
    assert(ps.some((p) => p.username === ORG && p.reponame === REPO), 'project not listed');
  },
  async v1Builds() {
    const bs = nonempty(await v1.builds({ limit: 5 }), 'v1.1 builds'); // GET /api/v1.1/project/gh/acme/widgets?limit=5
    bs.forEach((b) => has(b, 'build_num', 'status'));
  },
  async v1Build() {
    const b = await v1.build(jobNumber()); // GET /api/v1.1/project/{slug}/{n}
    has(b, 'build_num', 'status', 'lifecycle', 'outcome', 'vcs_revision', 'branch');
  },
  async v1Artifacts() {
    const as = nonempty(await v1.artifacts(jobNumber()), 'v1.1 artifacts'); // GET .../{n}/artifacts
    as.forEach((a) => has(a, 'path', 'pretty_path', 'node_index', 'url'));
  },
  async v1Tests() {
    const t = await v1.getTestMetadata(jobNumber()); // GET .../{n}/tests
    has(t, 'tests');
    nonempty(t.tests, 'v1.1 tests');
  },
  async v1EnvVars() {
    await v1.addEnvVar({ name: ENV_NAME, value: 'v1-secret-9999' }); // POST /api/v1.1/project/{slug}/envvar
    const names = (await v1.listEnvVars()).map((v) => v.name);
    assert(names.includes(ENV_NAME), `${ENV_NAME} not in ${names}`);
    has(await v1.getEnvVar(ENV_NAME), 'name', 'value');
    await v1.deleteEnvVar(ENV_NAME);
  },
  async v1CheckoutKeys() {
    const k = await v1.addCheckoutKey('deploy-key'); // POST /api/v1.1/project/{slug}/checkout-key {"type"}
    has(k, 'public_key', 'type', 'fingerprint', 'preferred', 'time');
    nonempty(await v1.listCheckoutKeys(), 'v1.1 checkout keys');
    has(await v1.getCheckoutKey(k.fingerprint), 'fingerprint');
    await v1.deleteCheckoutKey(k.fingerprint);
  },
};

/** Triggers a pipeline on the default branch; its first workflow once it has one (30 s). */
async function triggerAndWaitWorkflow() {
  if (process.env.BOSUN_SKIP_TRIGGER === '1') return SKIPPED;
  const created = await v2.triggerProjectPipeline({ branch: need('defaultBranch') }); // POST .../pipeline; wants 201
  has(created, 'id', 'number', 'state', 'created_at');
  const deadline = Date.now() + 30000;
  while (Date.now() < deadline) {
    const wfs = page(await v2.listPipelineWorkflows(created.id));
    if (wfs.length) return wfs[0];
    await new Promise((r) => setTimeout(r, 1000));
  }
  throw new Error(`pipeline ${created.number} got no workflow in 30 s`);
}

function jobNumber() {
  if (process.env.BOSUN_JOB_NUMBER) return Number(process.env.BOSUN_JOB_NUMBER);
  return need('job').job_number;
}

(async () => {
  const origWarn = console.warn;
  console.warn = () => {}; // circle-client warns once about "preview" endpoints
  for (const [name, fn] of Object.entries(checks)) {
    await check(name, fn);
  }
  console.warn = origWarn;
  console.log(`circle-client+circleci-api: ${passed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
})();
