"""Who may write: /searches exists only with a write token and needs it as a bearer token; typed
requests refuse paths and unknown fields; CORS is off unless configured.

Shared helpers: ``tests/api_support.py``; fixtures (``populated``, ``client``, ``fresh_uri``,
``jobs_home``): ``tests/conftest.py``."""

from __future__ import annotations


from fastapi.testclient import TestClient

from api.app import create_app

from api_support import TOKEN, AUTH, jobs_app, calls, BODY  # tests/ is on sys.path


def test_searches_absent_without_token(populated, jobs_home):
    c = TestClient(create_app(populated["uri"]))
    assert not any(p.startswith("/searches") for p in c.get("/openapi.json").json()["paths"])
    for method, path in (("POST", "/searches"), ("GET", "/searches"), ("GET", "/searches/0123456789ab"),
                         ("DELETE", "/searches/0123456789ab"), ("POST", "/searches/0123456789ab/resume")):
        r = c.request(method, path, json=BODY)
        assert r.status_code == 404, (method, path)
        assert "RECIPE_SEARCH_TOKEN" in r.json()["detail"] and "--data-root" in r.json()["detail"]
    assert not (jobs_home / "api-jobs.json").exists()


def test_searches_need_the_bearer_token(populated, jobs_home):
    c = TestClient(jobs_app(populated["uri"], jobs_home))
    spec = c.get("/openapi.json").json()
    assert {"/searches", "/searches/{job_id}", "/searches/{job_id}/resume",
            "/searches/{job_id}/log"} <= set(spec["paths"])
    assert spec["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer", "description": "The server's $RECIPE_SEARCH_TOKEN."}
    for method, path in (("POST", "/searches"), ("GET", "/searches"), ("GET", "/searches/0123456789ab"),
                         ("DELETE", "/searches/0123456789ab"), ("POST", "/searches/0123456789ab/resume"),
                         ("POST", "/searches/0123456789ab/cancel"), ("GET", "/searches/0123456789ab/log")):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"},
                        {"Authorization": f"Bearer {TOKEN}x"}):
            r = c.request(method, path, json=BODY, headers=headers)
            assert r.status_code == 401, (method, path, headers, r.text)
            assert r.headers["www-authenticate"] == "Bearer" and "Bearer" in r.json()["detail"]
    assert c.get("/searches", headers=AUTH).json() == []
    assert c.get("/recipes").status_code == 200  # reads stay open
    assert calls(jobs_home) == []


def test_typed_request_rejects_paths_and_unknown_fields(populated, jobs_home):
    c = TestClient(jobs_app(populated["uri"], jobs_home, max_trials=6))

    def bad(body: dict, field: str, *words: str) -> None:
        r = c.post("/searches", json=body, headers=AUTH)
        assert r.status_code == 422, (body, r.text)
        errs = r.json()["detail"]
        hit = [e for e in errs if e["loc"][:2] == ["body", field]]
        assert hit, (field, errs)
        for w in words:
            assert w in hit[0]["msg"], (w, hit[0]["msg"])

    bad({**BODY, "dataset": "/work/shared/data/cifar10-jpeg.tar.gz"}, "dataset", "'cifar10'", "'synthetic'")
    bad({**BODY, "dataset": "../cifar10"}, "dataset", "'cifar10'")
    bad({**BODY, "data": "/etc"}, "data", "Extra inputs are not permitted")
    bad({**BODY, "args": ["--storage-path", "/tmp/x"]}, "args", "Extra inputs are not permitted")
    bad({**BODY, "tracking_uri": "sqlite:////tmp/x.db"}, "tracking_uri", "Extra inputs")
    bad({**BODY, "space": "/etc/passwd"}, "space", "'default'", "'resnet18'")
    bad({**BODY, "space": "../search_spaces/default"}, "space", "'default'")
    bad({**BODY, "budget": "huge"}, "budget", "'tiny'", "'smoke'", "'proxy'")
    bad({**BODY, "backbones": ["resnet99"]}, "backbones", "'resnet99' is not a timm model", "resnet18")
    bad({**BODY, "backbones": ["resnet18", "resnet18"]}, "backbones", "given twice")
    bad({**BODY, "backbones": []}, "backbones")
    bad({**BODY, "trials": 7}, "trials", "6")
    bad({**BODY, "trials": 1}, "trials", "2")
    bad({**BODY, "seed": -1}, "seed")
    bad({**BODY, "seed": False}, "seed", "valid integer")  # strict: no bool/str/float coercion
    bad({**BODY, "seed": "3"}, "seed", "valid integer")
    bad({**BODY, "trials": 4.5}, "trials", "valid integer")
    bad({k: v for k, v in BODY.items() if k != "budget"}, "budget", "Field required")
    r = c.post("/searches", content=b"{not json", headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 422 and "Traceback" not in r.text
    schema = c.get("/openapi.json").json()["components"]["schemas"]["SearchJobRequest"]
    assert schema["additionalProperties"] is False
    assert schema["properties"]["dataset"]["enum"] == ["cifar10", "synthetic"]
    assert "resnet18" in schema["properties"]["backbones"]["items"]["enum"]
    assert schema["properties"]["trials"]["anyOf"][0]["maximum"] == 6
    assert calls(jobs_home) == []  # nothing was started


def test_cors_off_by_default_on_when_configured(populated):
    hdr = {"Origin": "https://dash.example"}
    off = TestClient(create_app(populated["uri"]))
    assert "access-control-allow-origin" not in off.get("/recipes", headers=hdr).headers
    on = TestClient(create_app(populated["uri"], cors_origins=["https://dash.example"]))
    r = on.get("/recipes", headers=hdr)
    assert r.headers["access-control-allow-origin"] == "https://dash.example"
    assert "etag" in r.headers["access-control-expose-headers"].lower()
    assert "access-control-allow-origin" not in on.get("/recipes", headers={"Origin": "https://evil"}).headers
