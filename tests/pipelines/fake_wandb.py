"""A minimal W&B server on loopback for the rehearsal: creates sweeps, runs and artifacts,
takes file_stream and uploads, serves artifact files back, and remembers each run's API key,
variables and exit code, each artifact's input and manifest, and which run used which
artifact."""
import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeWandb:
    def __init__(self):
        self.keys = []
        self.exit_codes = []
        self.history_rows = 0
        self.history = {}  # run name -> its history lines
        self.sweeps = []  # UpsertSweep variables
        self.runs = []  # UpsertBucket variables
        self.artifacts = []  # CreateArtifact inputs, with "id", "version", "manifest"
        self.uses = []  # (run, artifact id)
        self.blobs = {}  # upload path -> bytes
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def answer(self, body, status=200):
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_PUT(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                server.blobs[self.path] = body
                if self.path.startswith("/storage/manifest/"):
                    server.artifact(self.path.rsplit("/", 1)[1])["manifest"] = json.loads(body)
                self.answer({})

            def do_GET(self):
                # A manifest at the URL the server gave, or a file where the SDK looks for it:
                # /artifactsV2/<region>/<entity>/<project>/<collection>/<birth>/<md5>/<name>.
                parts = self.path.strip("/").split("/")
                if parts[0] == "artifactsV2" and len(parts) == 8:
                    path = f"/storage/artifact/{parts[5]}/{parts[7]}"
                else:
                    path = self.path
                blob = server.blobs.get(path)
                self.answer(blob if blob is not None else {}, 200 if blob is not None else 404)

            def do_POST(self):
                request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                auth = self.headers.get("Authorization", "")
                if auth.startswith("Basic "):
                    server.keys.append(base64.b64decode(auth[6:]).decode().split(":", 1)[1])
                if self.path.endswith("/file_stream"):
                    lines = request["files"].get("wandb-history.jsonl", {}).get("content", [])
                    server.history_rows += len(lines)
                    server.history.setdefault(self.path.split("/")[-2], []).extend(lines)
                    if request.get("complete"):
                        server.exit_codes.append(request["exitcode"])
                    return self.answer({"exitcode": None, "limits": {}})
                variables = request.get("variables", {})
                if request.get("operationName") == "RunResumeStatus":
                    return self.answer({"data": {"model": server.resume_status(variables)}})
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
                artifact_answer = server.artifact_operation(request.get("operationName"), variables)
                if artifact_answer is not None:
                    return self.answer({"data": artifact_answer})
                files = [{"name": n, "uploadUrl": f"{server.url}/storage/{n}"} for n in variables.get("files", [])]
                return self.answer({"data": {"createRunFiles": {"runID": "r", "uploadHeaders": [], "files": files}}})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def resume_status(self, variables):
        """What the server holds of a run, as RunResumeStatus answers: null for a new run."""
        known = [run for run in self.runs if run["name"] == variables["name"]]
        history = self.history.get(variables["name"], [])
        bucket = known and {
            "id": "r", "name": variables["name"], "displayName": known[-1].get("displayName"),
            "summaryMetrics": "{}", "config": known[-1].get("config"), "logLineCount": 0,
            "historyLineCount": len(history), "eventsLineCount": 0,
            "historyTail": json.dumps(history[-10:]), "eventsTail": "[]", "tags": [],
            "notes": None, "wandbConfig": "{}"} or None
        return {"id": "p", "name": variables["project"], "entity": {"id": "e", "name": "rehearsal"},
                "bucket": bucket}

    def artifact(self, artifact_id):
        return next(a for a in self.artifacts if a["id"] == artifact_id)

    def named(self, name):
        """The version called collection:alias or collection:vN."""
        collection, _, tag = name.partition(":")
        return next((a for a in self.artifacts if a["artifactCollectionName"] == collection
                     and (tag in a["live_aliases"] or tag == f"v{a['version']}")), None)

    def artifact_operation(self, operation, variables):
        """The answer to an artifact operation; None for other operations."""
        if operation == "CreateArtifact":
            artifact = dict(variables["input"])
            collection = artifact["artifactCollectionName"]
            same = [a for a in self.artifacts if a["artifactCollectionName"] == collection]
            aliases = [a["alias"] for a in artifact["aliases"]]
            for other in same:
                other["live_aliases"] = [x for x in other["live_aliases"] if x not in aliases]
            artifact.update(id=f"art{len(self.artifacts)}", version=len(same), live_aliases=aliases)
            self.artifacts.append(artifact)
            return {"createArtifact": {"artifact": {
                "id": artifact["id"], "state": "PENDING", "artifactSequence": {"latestArtifact": None}}}}
        if operation == "CreateArtifactManifest":
            url = f"{self.url}/storage/manifest/{variables['artifactID']}"
            return {"createArtifactManifest": {"artifactManifest": {
                "id": "m", "file": {"id": "f", "uploadUrl": url, "uploadHeaders": []}}}}
        if operation == "CreateArtifactFiles":
            return {"createArtifactFiles": {"files": {"edges": [{"node": {
                "storagePath": f["name"],
                "uploadUrl": f"{self.url}/storage/artifact/{f['artifactID']}/{f['name']}",
                "uploadHeaders": [], "uploadMultipartUrls": None, "artifact": {"id": f["artifactID"]}}}
                for f in variables["input"]["artifactFiles"]]}}}
        if operation == "CommitArtifact":
            return {"commitArtifact": {"artifact": {"id": variables["artifactID"], "digest": "d"}}}
        if operation == "UseArtifact":
            self.uses.append((variables["input"]["runName"], variables["input"]["artifactID"]))
            return {"useArtifact": {"artifact": {"id": variables["input"]["artifactID"]}}}
        if operation == "ArtifactFiles":
            found = self.named(variables["name"])
            node = found and {"id": found["id"], "versionIndex": found["version"],
                              "metadata": found["metadata"], "currentManifest": {"file": {
                                  "directUrl": f"{self.url}/storage/manifest/{found['id']}"}}}
            return {"project": {"entity": {"name": "rehearsal"}, "artifact": node}}
        if operation in ("ArtifactByName", "ArtifactVersion"):
            found = (self.named(variables["name"]) if operation == "ArtifactByName"
                     else self.artifact(variables["id"]))
            node = found and {"id": found["id"], "versionIndex": found["version"],
                              "metadata": found["metadata"], "artifactType": {"name": found["artifactTypeName"]},
                              "aliases": [{"alias": a} for a in found["live_aliases"]]}
            return {"project": {"artifact": node}} if operation == "ArtifactByName" else {"artifact": node}
        return None

    def stop(self):
        self.httpd.shutdown()
