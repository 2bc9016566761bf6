"""Serving: a small HTTP service over a ServingGuard, with a snapshot-refresher thread.

    python examples/serving.py [--port 8080] [--users 2000] [--items 1000]
    python examples/serving.py --demo        # starts, queries itself, breaks, stops

Endpoints (standard library only; ``/metrics`` needs the ``metrics`` extra):

- ``GET /recommend?user=U&n=10``: the guarded slate as JSON, or **503** when the service
  fails closed (no snapshot, an unreadable one, or one older than ``--max-age``);
- ``GET /health``: 200 while the held snapshot may be served, 503 otherwise;
- ``GET /metrics``: Prometheus text (decision counters and ServingGuard health).

A refresher thread rebuilds the label snapshot from the label store every ``--refresh``
seconds, writes it to a file and loads it into the ServingGuard (an atomic swap). When a
refresh fails (here: ``--demo`` corrupts the snapshot file), the last good snapshot stays
in service until it is ``--max-age`` seconds old; after that every call is refused with
503 rather than served without fresh safety signals.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import tempfile
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import implicit
import numpy as np
import scipy.sparse as sp

import guardrails as gr

log = logging.getLogger("serving-example")


def build(n_users: int, n_items: int, seed: int = 0):
    """Synthetic follows, a trained ALS model, and a label store flagging a few accounts."""
    rng = np.random.default_rng(seed)
    pop = rng.pareto(1.5, n_items) + 1
    rows = np.repeat(np.arange(n_users), 15)
    cols = rng.choice(n_items, size=rows.size, p=pop / pop.sum())
    user_items = sp.csr_matrix(
        (np.ones(rows.size, np.float32), (rows, cols)), shape=(n_users, n_items)
    )
    user_items.sum_duplicates()
    user_items.data[:] = 1
    model = implicit.cpu.als.AlternatingLeastSquares(
        factors=16, iterations=5, random_state=seed, num_threads=1
    )
    model.fit(user_items, show_progress=False)
    # External account ids differ from model indices, as in production.
    id_map = gr.IdMap(np.arange(n_items) * 7 + 1000)
    store = gr.LabelStore()
    top = np.argsort(-pop)[:5]  # popular accounts flagged: they would be everywhere
    for i in top:
        store.add(int(id_map.ids[i]), "csam", source="reviewer")
    return user_items, model, id_map, store, top


class Refresher(threading.Thread):
    """Rebuilds the snapshot every ``interval`` seconds and loads it into ``serving``."""

    def __init__(self, serving, store, id_map, path: str, interval: float):
        super().__init__(name="snapshot-refresher", daemon=True)
        self.serving, self.store, self.id_map = serving, store, id_map
        self.path, self.interval = path, interval
        self.stop = threading.Event()
        self.broken = threading.Event()  # --demo: simulate a failing pipeline
        self.refreshes = self.failures = 0

    def refresh_once(self) -> None:
        if self.broken.is_set():
            with open(self.path, "wb") as f:  # a torn or corrupted write upstream
                f.write(b"not a snapshot")
        else:
            snap = self.store.snapshot(self.id_map)
            tmp = self.path + ".tmp"
            snap.save(tmp)
            os.replace(tmp, self.path)  # readers never see half a file
        try:
            self.serving.load_snapshot(self.path)
            self.refreshes += 1
        except (gr.GuardrailsError, ValueError) as exc:
            # The held snapshot stays in service until it is too old; then calls fail closed.
            self.failures += 1
            log.warning("snapshot refresh failed: %s", exc)

    def run(self) -> None:
        while not self.stop.wait(self.interval):
            self.refresh_once()


def make_handler(serving, collector_registry):
    class Handler(BaseHTTPRequestHandler):
        def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _json(self, code: int, obj) -> None:
            self._send(code, json.dumps(obj).encode())

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            url = urlparse(self.path)
            q = parse_qs(url.query)
            if url.path == "/health":
                ok, reason, msg = serving.check()
                self._json(200 if ok else 503, {"ok": ok, "reason": reason, "detail": msg})
            elif url.path == "/metrics" and collector_registry is not None:
                from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

                self._send(200, generate_latest(collector_registry), CONTENT_TYPE_LATEST)
            elif url.path == "/recommend":
                try:
                    user = int(q["user"][0])
                    n = int(q.get("n", ["10"])[0])
                    r = serving.recommend_detailed(
                        user, None, N=n, filter_already_liked_items=False
                    )
                except (KeyError, ValueError) as exc:  # ValidationError is a ValueError
                    self._json(400, {"error": str(exc)})
                except gr.FailClosedError as exc:
                    self._json(503, {"error": "fail_closed", "detail": str(exc)})
                else:
                    self._json(
                        200,
                        {
                            "ids": r.ids.tolist(),
                            "scores": [float(s) for s in r.scores],
                            "policy_version": r.policy_version,
                            "snapshot_version": r.snapshot_version,
                        },
                    )
            else:
                self._json(404, {"error": "not found"})

        def log_message(self, fmt, *args) -> None:
            log.debug("%s " + fmt, self.address_string(), *args)

    return Handler


def serve(args, *, ready=None):
    """Build everything and start the server; returns (server, refresher, context)."""
    user_items, model, id_map, store, flagged = build(args.users, args.items, args.seed)
    policy = [gr.filters.BlockLabeled(["csam"], reason="csam_seller")]
    tmpdir = tempfile.mkdtemp(prefix="guardrails-serving-")
    path = os.path.join(tmpdir, "labels.snapshot")
    # The first snapshot is in before the Guard exists: a child-safety filter refuses to
    # compile without its labels (it fails closed), so there is nothing to serve before.
    store.snapshot(id_map).save(path)
    guard = gr.Guard(model, policy, snapshot=gr.Snapshot.load(path))
    serving = gr.ServingGuard(guard, max_snapshot_age=args.max_age)
    refresher = Refresher(serving, store, id_map, path, args.refresh)
    registry = None
    try:
        from prometheus_client import CollectorRegistry

        from guardrails.metrics import register_metrics

        registry = CollectorRegistry()
        register_metrics(guard, serving=serving, registry=registry)
    except ImportError:
        log.info("prometheus-client not installed: no /metrics")
    server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(serving, registry))
    refresher.start()
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    return server, refresher, {"flagged": flagged, "tmpdir": tmpdir, "registry": registry}


def _get(port: int, path: str):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def demo(args) -> dict:
    """Start the service, query it, break the refresher, watch it fail closed, stop."""
    args.port = 0
    server, refresher, ctx = serve(args)
    port = server.server_address[1]
    out: dict = {"ok": [], "after_break": None}
    try:
        for user in range(0, min(args.users, 20)):
            code, body = _get(port, f"/recommend?user={user}&n=10")
            assert code == 200, body
            ids = json.loads(body)["ids"]
            assert not np.isin(ids, ctx["flagged"]).any()
            out["ok"].append(len(ids))
        out["health"] = _get(port, "/health")[0]
        if ctx["registry"] is not None:
            out["metrics"] = _get(port, "/metrics")[1]
        # The snapshot pipeline breaks: refreshes fail, the last snapshot ages out.
        refresher.broken.set()
        deadline = time.monotonic() + args.max_age + 10 * args.refresh + 5
        while time.monotonic() < deadline:
            code, body = _get(port, "/recommend?user=0&n=10")
            if code == 503:
                out["after_break"] = (code, json.loads(body)["error"])
                break
            time.sleep(args.refresh / 2)
        out["health_after"] = _get(port, "/health")[0]
        out["refresh_failures"] = refresher.failures
        print(
            f"served {len(out['ok'])} slates, none flagged; after the refresher broke: "
            f"{out['after_break']} (refresh failures: {refresher.failures})"
        )
    finally:
        refresher.stop.set()
        refresher.join(5)
        server.shutdown()
        server.server_close()
        shutil.rmtree(ctx["tmpdir"], ignore_errors=True)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--items", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--refresh", type=float, default=5.0, help="seconds between refreshes")
    ap.add_argument("--max-age", type=float, default=60.0, help="seconds before failing closed")
    ap.add_argument("--demo", action="store_true", help="query itself, break, stop")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.demo:
        return demo(args)
    server, refresher, _ = serve(args)
    print(f"serving on http://127.0.0.1:{server.server_address[1]} (Ctrl-C stops)")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        refresher.stop.set()
        server.shutdown()


if __name__ == "__main__":
    main()
