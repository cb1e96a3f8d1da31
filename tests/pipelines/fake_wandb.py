"""A minimal W&B server on loopback for the rehearsal: creates sweeps and runs, takes
file_stream and uploads, and remembers each run's API key, variables and exit code."""
import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeWandb:
    def __init__(self):
        self.keys = []
        self.exit_codes = []
        self.history_rows = 0
        self.sweeps = []  # UpsertSweep variables
        self.runs = []  # UpsertBucket variables
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def answer(self, body):
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_PUT(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self.answer({})

            def do_POST(self):
                request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                auth = self.headers.get("Authorization", "")
                if auth.startswith("Basic "):
                    server.keys.append(base64.b64decode(auth[6:]).decode().split(":", 1)[1])
                if self.path.endswith("/file_stream"):
                    server.history_rows += len(request["files"].get("wandb-history.jsonl", {}).get("content", []))
                    if request.get("complete"):
                        server.exit_codes.append(request["exitcode"])
                    return self.answer({"exitcode": None, "limits": {}})
                variables = request.get("variables", {})
                if request.get("operationName") == "UpsertSweep":
                    server.sweeps.append(variables)
                    return self.answer({"data": {"upsertSweep": {"sweep": {
                        "name": f"sweep{len(server.sweeps)}", "project": {
                            "id": "p", "name": variables.get("projectName") or "uncategorized",
                            "entity": {"id": "e", "name": variables.get("entityName") or "rehearsal"}}},
                        "configValidationWarnings": []}}})
                if request.get("operationName") == "UpsertBucket":
                    server.runs.append(variables)
                    return self.answer({"data": {"upsertBucket": {"bucket": {
                        "id": "r", "name": variables["name"], "project": {
                            "id": "p", "name": variables["project"],
                            "entity": {"id": "e", "name": variables.get("entity") or "rehearsal"}}},
                        "inserted": True}}})
                files = [{"name": n, "uploadUrl": f"{server.url}/storage/{n}"} for n in variables.get("files", [])]
                return self.answer({"data": {"createRunFiles": {"runID": "r", "uploadHeaders": [], "files": files}}})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self):
        self.httpd.shutdown()
