"""Schemathesis hooks for the integration suite's pass (tests/api/openapi.rs).

Input files must have distinct paths, none the folder of another: a rule
about the list as a whole that JSON Schema cannot state, and that the server
answers with 400. Generated bodies that break it are skipped, so a request
the schema calls valid is one the server must take.
"""

import schemathesis


def _paths_clash(files):
    paths = [f["path"] for f in files if isinstance(f, dict) and isinstance(f.get("path"), str)]
    if len(set(paths)) != len(paths):
        return True
    folders = {path[:at] for path in paths for at, char in enumerate(path) if char == "/"}
    return any(path in folders for path in paths)


@schemathesis.hook
def filter_body(ctx, body):
    files = body.get("files") if isinstance(body, dict) else None
    return not (isinstance(files, list) and _paths_clash(files))
