#!/usr/bin/env python3
"""Drives bosun-server with the third-party `pycircleci` client (PyPI, pinned 0.7.0).

Env: BOSUN_URL (http://127.0.0.1:8730), BOSUN_TOKEN (a token allowed to write the project and
create contexts, e.g. the admin token), BOSUN_SLUG (gh/acme/widgets: a project with at least
one finished pipeline whose first job stored >= 1 artifact and >= 1 test result).
Optional: BOSUN_JOB_NUMBER (job to read artifacts/tests/details of; default: first numbered job
of the newest finished pipeline), BOSUN_PIPELINE_ID (the finished pipeline to use), BOSUN_SKIP_TRIGGER=1 (do not trigger + cancel a new pipeline).

Prints one `PASS name` / `FAIL name: why` line per call, then `N passed, N failed`; exits 1 on
any FAIL. A check whose input came from a failed check FAILs too (never silently skipped).
"""

import os
import sys
import time
import uuid

from pycircleci.api import Api

URL = os.environ["BOSUN_URL"].rstrip("/")
TOKEN = os.environ["BOSUN_TOKEN"]
SLUG = os.environ["BOSUN_SLUG"]
VCS, ORG, REPO = SLUG.split("/")
FINAL = {"success", "failed", "error", "canceled", "not_run", "unauthorized", "failing"}

# pycircleci appends /v1.1/... or /v2/... to this base itself.
api = Api(token=TOKEN, url=f"{URL}/api")
results = {"pass": 0, "fail": 0}
state = {}


class Missing(Exception):
    """An earlier check did not produce what this one needs."""


class Skipped(Exception):
    """The caller asked not to run this check; reported as SKIP, never as PASS."""


def need(key):
    if key not in state:
        raise Missing(f"needs `{key}` from an earlier check that failed")
    return state[key]


def check(name, fn):
    try:
        fn()
    except Skipped as why:
        print(f"SKIP {name}: {why}", flush=True)
    except Exception as err:  # one line per call, whatever broke
        results["fail"] += 1
        where = ""
        resp = getattr(err, "response", None)
        if resp is not None:
            where = f" [{resp.request.method} {resp.request.url} -> {resp.status_code} {resp.text[:200]!r}]"
        if not isinstance(err, (AssertionError, Missing)) and resp is None:
            where = f" ({type(err).__name__})"
        print(f"FAIL {name}: {err}{where}", flush=True)
    else:
        results["pass"] += 1
        print(f"PASS {name}", flush=True)


def has(obj, *fields):
    assert isinstance(obj, dict), f"expected an object, got {type(obj).__name__}: {str(obj)[:200]}"
    missing = [f for f in fields if f not in obj]
    assert not missing, f"missing fields {missing} in {str(obj)[:300]}"


def nonempty_list(value, what):
    assert isinstance(value, list), f"{what}: expected a list, got {type(value).__name__}"
    assert value, f"{what}: empty"
    return value


# --- user -------------------------------------------------------------------------------------
def me_v1():
    me = api.get_user_info()  # GET /api/v1.1/me
    has(me, "login")


def me_v2():
    me = api.get_user_info(api_version="v2")  # GET /api/v2/me
    has(me, "id", "login", "name")
    state["user_id"] = me["id"]


def collaborations():
    orgs = nonempty_list(api.get_user_collaborations(), "collaborations")  # GET /api/v2/me/collaborations
    for org in orgs:
        has(org, "id", "vcs-type", "name", "avatar_url", "slug")
    assert any(o["name"] == ORG for o in orgs), f"org {ORG} not among {[o['name'] for o in orgs]}"


def user_by_id():
    user = api.get_user_id_info(need("user_id"))  # GET /api/v2/user/{id}
    has(user, "id", "login", "name")
    assert user["id"] == state["user_id"]


# --- projects ---------------------------------------------------------------------------------
def project_v2():
    proj = api.get_project(SLUG)  # GET /api/v2/project/gh/acme/widgets (slug not escaped)
    has(proj, "slug", "name", "organization_name", "organization_slug", "organization_id", "vcs_info")
    has(proj["vcs_info"], "vcs_url", "provider", "default_branch")
    assert proj["name"] == REPO, proj["name"]
    state["default_branch"] = proj["vcs_info"]["default_branch"]


def projects_v1():
    projects = nonempty_list(api.get_projects(), "v1.1 projects")  # GET /api/v1.1/projects
    for p in projects:
        has(p, "username", "reponame", "vcs_url")
    assert any(p["username"] == ORG and p["reponame"] == REPO for p in projects), "project not listed"


# --- pipelines --------------------------------------------------------------------------------
def project_pipelines():
    # GET /api/v2/project/gh/acme/widgets/pipeline, then ?page-token=... while next_page_token
    items = nonempty_list(api.get_project_pipelines(ORG, REPO, vcs_type=VCS, paginate=True, limit=200), "pipelines")
    for p in items:
        has(p, "id", "number", "project_slug", "state", "created_at", "trigger", "vcs", "errors")
    numbers = [p["number"] for p in items]
    assert numbers == sorted(numbers, reverse=True), f"not newest first: {numbers[:10]}"
    state["pipelines"] = items


def pick_finished_pipeline():
    """Newest pipeline whose workflows all ended, with a numbered job (for job checks).

    BOSUN_PIPELINE_ID names one instead, for servers that cannot list pipelines yet."""
    if os.environ.get("BOSUN_PIPELINE_ID"):
        candidates = [api.get_pipeline(os.environ["BOSUN_PIPELINE_ID"])]
    else:
        candidates = need("pipelines")
    for p in candidates:
        workflows = api.get_pipeline_workflow(p["id"], paginate=True)
        if not workflows or any(w["status"] not in FINAL for w in workflows):
            continue
        for w in workflows:
            for j in api.get_workflow_jobs(w["id"], paginate=True):
                if j.get("job_number") is not None:
                    state.update(pipeline=p, workflow=w, job=j)
                    return
    raise AssertionError("no finished pipeline with a numbered job")


def pipelines_by_branch():
    branch = need("pipeline")["vcs"]["branch"]
    items = nonempty_list(
        api.get_project_pipelines(ORG, REPO, branch=branch, vcs_type=VCS), f"pipelines of branch {branch}"
    )  # GET .../pipeline?branch=main
    assert all(p["vcs"].get("branch") == branch for p in items), "a pipeline of another branch came back"


def pipelines_mine():
    items = api.get_project_pipelines(ORG, REPO, mine=True, vcs_type=VCS)  # GET .../pipeline/mine
    assert isinstance(items, list), items
    for p in items:
        has(p, "id", "number", "state")


def org_pipelines():
    items = nonempty_list(api.get_pipelines(ORG, vcs_type=VCS), "org pipelines")  # GET /api/v2/pipeline?org-slug=gh/acme
    assert any(p["project_slug"] == SLUG for p in items), "project's pipelines missing from org list"


def pipeline_by_number():
    p = need("pipeline")
    got = api.get_project_pipeline(ORG, REPO, p["number"], vcs_type=VCS)  # GET .../pipeline/{number}
    has(got, "id", "number", "state")
    assert got["id"] == p["id"], (got["id"], p["id"])


def pipeline_by_id():
    p = need("pipeline")
    got = api.get_pipeline(p["id"])  # GET /api/v2/pipeline/{id}
    has(got, "id", "number", "project_slug", "state", "trigger", "vcs")
    assert got["number"] == p["number"]


def pipeline_config():
    cfg = api.get_pipeline_config(need("pipeline")["id"])  # GET /api/v2/pipeline/{id}/config
    has(cfg, "source", "compiled")
    assert "jobs" in cfg["source"] and "jobs" in cfg["compiled"], "config text lacks `jobs`"


# --- workflows and jobs -----------------------------------------------------------------------
def workflow_get():
    w = need("workflow")
    got = api.get_workflow(w["id"])  # GET /api/v2/workflow/{id}
    has(got, "id", "name", "status", "pipeline_id", "pipeline_number", "project_slug", "created_at", "stopped_at")
    assert got["pipeline_id"] == need("pipeline")["id"]


def workflow_jobs():
    jobs = nonempty_list(api.get_workflow_jobs(need("workflow")["id"], paginate=True), "workflow jobs")
    for j in jobs:
        has(j, "id", "name", "status", "type", "dependencies", "project_slug")


def job_number():
    if os.environ.get("BOSUN_JOB_NUMBER"):
        return int(os.environ["BOSUN_JOB_NUMBER"])
    return need("job")["job_number"]


def job_details_v2():
    j = api.get_job_details(ORG, REPO, job_number(), vcs_type=VCS)  # GET /api/v2/project/{slug}/job/{n}
    has(j, "number", "name", "status", "web_url", "project", "pipeline", "latest_workflow", "executor",
        "parallel_runs", "created_at", "contexts", "organization", "messages")
    assert j["number"] == job_number()


def build_v1():
    b = api.get_build_info(ORG, REPO, job_number(), vcs_type=VCS)  # GET /api/v1.1/project/{slug}/{n}
    has(b, "build_num", "status", "lifecycle", "outcome", "vcs_revision", "branch", "username", "reponame")
    assert b["build_num"] == job_number()


def build_summary_v1():
    builds = nonempty_list(api.get_project_build_summary(ORG, REPO, limit=5, vcs_type=VCS), "v1.1 builds")
    for b in builds:
        has(b, "build_num", "status")


def artifacts_v1():
    arts = nonempty_list(api.get_artifacts(ORG, REPO, job_number(), vcs_type=VCS), "v1.1 artifacts")
    for a in arts:
        has(a, "path", "pretty_path", "node_index", "url")
    state["artifact_url"] = arts[0]["url"]


def artifact_download():
    path = api.download_artifact(need("artifact_url"), destdir="/tmp")  # GET url with Circle-Token
    assert os.path.getsize(path) > 0, f"{path} is empty"


def tests_v1():
    meta = api.get_test_metadata(ORG, REPO, job_number(), vcs_type=VCS)  # GET /api/v1.1/project/{slug}/{n}/tests
    has(meta, "tests")
    for t in nonempty_list(meta["tests"], "v1.1 tests"):
        has(t, "name", "classname", "result", "run_time")


def cancel_finished_job():
    # CircleCI answers a finished job's cancel cleanly; bosun answers 409 {"message"}.
    try:
        resp = api.cancel_job(ORG, REPO, job_number(), vcs_type=VCS)  # POST .../job/{n}/cancel
        has(resp, "message")
    except Exception as err:
        resp = getattr(err, "response", None)
        assert resp is not None and resp.status_code == 409 and "message" in resp.json(), err


def trigger_and_wait_workflow():
    """Triggers a pipeline on the default branch; its first workflow once it has one (30 s)."""
    if os.environ.get("BOSUN_SKIP_TRIGGER") == "1":
        raise Skipped("BOSUN_SKIP_TRIGGER=1")
    created = api.trigger_pipeline(ORG, REPO, branch=need("default_branch"), vcs_type=VCS)  # POST .../pipeline {"branch"}
    has(created, "id", "number", "state", "created_at")
    deadline = time.time() + 30
    while time.time() < deadline:
        workflows = api.get_pipeline_workflow(created["id"])
        if workflows:
            return workflows[0]
        time.sleep(1)
    raise AssertionError(f"pipeline {created['number']} got no workflow in 30 s")


def trigger_and_cancel_job():
    """A job not finished (no runner takes it, or it is running) is canceled by number."""
    workflow = trigger_and_wait_workflow()
    deadline = time.time() + 30
    while time.time() < deadline:
        numbered = [j for j in api.get_workflow_jobs(workflow["id"]) if j.get("job_number") is not None]
        if numbered:
            resp = api.cancel_job(ORG, REPO, numbered[0]["job_number"], vcs_type=VCS)  # POST .../job/{n}/cancel
            has(resp, "message")
            return
        time.sleep(1)
    raise AssertionError("no job of the new pipeline got a number in 30 s")


def trigger_and_cancel_workflow():
    workflow = trigger_and_wait_workflow()
    resp = api.cancel_workflow(workflow["id"])  # POST /api/v2/workflow/{id}/cancel
    has(resp, "message")


# --- project env vars (pycircleci uses v1.1 for these) ----------------------------------------
ENV_NAME = "BOSUN_CLIENT_CHECK_" + uuid.uuid4().hex[:8].upper()


def envvar_add():
    var = api.add_envvar(ORG, REPO, ENV_NAME, "s3cr3t-value-1234", vcs_type=VCS)  # POST /api/v1.1/project/{slug}/envvar
    has(var, "name", "value")
    assert var["name"] == ENV_NAME and var["value"] != "s3cr3t-value-1234", var


def envvar_list():
    names = [v["name"] for v in api.list_envvars(ORG, REPO, vcs_type=VCS)]  # GET /api/v1.1/project/{slug}/envvar
    assert ENV_NAME in names, names


def envvar_get():
    var = api.get_envvar(ORG, REPO, ENV_NAME, vcs_type=VCS)  # GET .../envvar/{name}
    has(var, "name", "value")
    assert var["value"] != "s3cr3t-value-1234" and var["value"].endswith("1234"), var["value"]


def envvar_delete():
    resp = api.delete_envvar(ORG, REPO, ENV_NAME, vcs_type=VCS)  # DELETE .../envvar/{name}; body must be JSON
    has(resp, "message")
    assert ENV_NAME not in [v["name"] for v in api.list_envvars(ORG, REPO, vcs_type=VCS)]


# --- checkout keys (v1.1) ---------------------------------------------------------------------
def checkout_key_create():
    key = api.create_checkout_key(ORG, REPO, "deploy-key", vcs_type=VCS)  # POST /api/v1.1/project/{slug}/checkout-key
    has(key, "public_key", "type", "fingerprint", "preferred", "time")
    assert key["public_key"].startswith("ssh-"), key["public_key"][:40]
    state["fingerprint"] = key["fingerprint"]


def checkout_key_list():
    keys = nonempty_list(api.list_checkout_keys(ORG, REPO, vcs_type=VCS), "checkout keys")
    assert need("fingerprint") in [k["fingerprint"] for k in keys]


def checkout_key_get():
    key = api.get_checkout_key(ORG, REPO, need("fingerprint"), vcs_type=VCS)
    has(key, "public_key", "fingerprint")


def checkout_key_delete():
    resp = api.delete_checkout_key(ORG, REPO, need("fingerprint"), vcs_type=VCS)
    has(resp, "message")


# --- contexts (v2) ----------------------------------------------------------------------------
CTX_NAME = "bosun-client-check-" + uuid.uuid4().hex[:8]


def context_add():
    ctx = api.add_context(CTX_NAME, username=ORG, vcs_type=VCS)  # POST /api/v2/context {"name","owner":{"type","slug"}}
    has(ctx, "id", "name", "created_at")
    state["context_id"] = ctx["id"]


def context_list():
    # GET /api/v2/context?owner-type=organization&owner-slug=gh/acme (+page-token); reads resp["next_page_token"]
    ctxs = api.get_contexts(username=ORG, vcs_type=VCS, paginate=True)
    assert need("context_id") in [c["id"] for c in ctxs], [c["name"] for c in ctxs]


def context_get():
    ctx = api.get_context(need("context_id"))
    has(ctx, "id", "name", "created_at")
    assert ctx["name"] == CTX_NAME


def context_env_put():
    var = api.add_context_envvar(need("context_id"), "CTX_VAR", "v1")  # PUT .../environment-variable/CTX_VAR {"value"}
    has(var, "variable", "context_id", "created_at")


def context_env_list():
    items = api.get_context_envvars(need("context_id"), paginate=True)
    assert [v["variable"] for v in items] == ["CTX_VAR"], items


def context_env_delete():
    has(api.delete_context_envvar(need("context_id"), "CTX_VAR"), "message")


def context_delete():
    has(api.delete_context(need("context_id")), "message")


CHECKS = [
    me_v1, me_v2, collaborations, user_by_id,
    project_v2, projects_v1,
    project_pipelines, pick_finished_pipeline, pipelines_by_branch, pipelines_mine, org_pipelines,
    pipeline_by_number, pipeline_by_id, pipeline_config,
    workflow_get, workflow_jobs, job_details_v2, build_v1, build_summary_v1,
    artifacts_v1, artifact_download, tests_v1, cancel_finished_job, trigger_and_cancel_job,
    trigger_and_cancel_workflow,
    envvar_add, envvar_list, envvar_get, envvar_delete,
    checkout_key_create, checkout_key_list, checkout_key_get, checkout_key_delete,
    context_add, context_list, context_get, context_env_put, context_env_list, context_env_delete, context_delete,
]

if __name__ == "__main__":
    for fn in CHECKS:
        check(fn.__name__, fn)
    print(f"pycircleci: {results['pass']} passed, {results['fail']} failed")
    sys.exit(1 if results["fail"] else 0)
