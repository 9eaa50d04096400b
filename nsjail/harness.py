"""In-jail harness: runs one script's main() and reports on a dedicated fd.

Protocol (the gateway's side is src/sandbox/frame.rs):
  stdin   one JSON object {"script": str, "args": object}, then EOF
  fd 3    exactly one JSON frame, written once after main() returns:
            {"status": "ok", "result": <value>}
            {"status": "syntax_error", "message", "line", "column"}
            {"status": "missing_main", "message"}
            {"status": "runtime_error", "exception", "message", "traceback"}
            {"status": "non_json", "message"}
  stdout  / stderr are the script's own.

Everything the report path needs is bound here, before the script runs, so a
script that patches builtins, json or sys.modules cannot change how the frame is
written. The gateway still parses the frame strictly and trusts nothing in it
beyond its shape: the frame is at most what the script itself could return.
"""

import ast
import json
import os
import sys
import traceback
import types

RESULT_FD = 3
SCRIPT_FILENAME = "<script>"
MAX_RESULT_DEPTH = 256

_write = os.write
_close = os.close
_encode = json.JSONEncoder(allow_nan=False, ensure_ascii=False, separators=(",", ":")).encode
_isinstance = isinstance
_type = type
_str = str
_float = float
_dict = dict
_list = list
_tuple = tuple
_id = id
_flush_stdout = sys.stdout.flush
_flush_stderr = sys.stderr.flush
_JSON_SCALARS = (str, int, float, bool, type(None))
_INFINITIES = (float("inf"), float("-inf"))
_FunctionType = types.FunctionType


class NotJson(Exception):
    pass


def _numpy_scalar_type():
    # numpy is optional: when the script never imported it, no value can be one.
    numpy = sys.modules.get("numpy")
    generic = getattr(numpy, "generic", None) if numpy is not None else None
    return generic if _isinstance(generic, type) else None


def _to_json_value(value, numpy_generic, depth, seen):
    """Converts main()'s value to plain JSON types, refusing what JSON cannot carry.

    numpy scalars (np.int64 from df.sum().to_dict(), say) become Python numbers,
    as the original service's examples need; arrays, DataFrames and other objects
    are refused rather than silently stringified.
    """
    if depth > MAX_RESULT_DEPTH:
        raise NotJson("the result is nested more than %d levels deep" % MAX_RESULT_DEPTH)
    if numpy_generic is not None and _isinstance(value, numpy_generic):
        value = value.item()
    value_type = _type(value)
    if value_type in _JSON_SCALARS:
        if value_type is _float and (value != value or value in _INFINITIES):
            raise NotJson("the result contains NaN or Infinity, which JSON cannot carry")
        return value
    if value_type in (_list, _tuple):
        key = _id(value)
        if key in seen:
            raise NotJson("the result contains a reference cycle")
        seen.add(key)
        converted = [_to_json_value(item, numpy_generic, depth + 1, seen) for item in value]
        seen.discard(key)
        return converted
    if value_type is _dict:
        key = _id(value)
        if key in seen:
            raise NotJson("the result contains a reference cycle")
        seen.add(key)
        converted = {}
        for item_key, item in value.items():
            if numpy_generic is not None and _isinstance(item_key, numpy_generic):
                item_key = item_key.item()
            key_type = _type(item_key)
            if key_type is _float and (item_key != item_key or item_key in _INFINITIES):
                raise NotJson("the result has a NaN or Infinity dictionary key")
            if key_type not in _JSON_SCALARS:
                raise NotJson("the result has a dictionary key of type %s" % key_type.__name__)
            text_key = _encode(item_key).strip('"') if key_type is not _str else item_key
            converted[text_key] = _to_json_value(item, numpy_generic, depth + 1, seen)
        seen.discard(key)
        return converted
    raise NotJson("main() returned a value of type %s, which is not JSON serializable" % value_type.__name__)


def _report(frame):
    _flush_output()
    data = _encode(frame).encode("utf-8", "surrogatepass")
    view = memoryview(data)
    while view:
        written = _write(RESULT_FD, view)
        view = view[written:]
    _close(RESULT_FD)


def _flush_output():
    for flush in (_flush_stdout, _flush_stderr):
        try:
            flush()
        except Exception:
            pass


def _script_traceback(exc):
    frames = [frame for frame in traceback.extract_tb(exc.__traceback__) if frame.filename == SCRIPT_FILENAME]
    lines = ["Traceback (most recent call last):\n"]
    lines.extend(traceback.format_list(frames))
    lines.extend(traceback.format_exception_only(_type(exc), exc))
    return "".join(lines)


def _describe(exc):
    try:
        return _str(exc)
    except BaseException:
        return "<unprintable %s>" % _type(exc).__name__


def _has_top_level_main(tree):
    for node in tree.body:
        if _isinstance(node, ast.FunctionDef) and node.name == "main":
            return None
        if _isinstance(node, ast.AsyncFunctionDef) and node.name == "main":
            return "main() must be a plain function: async def main is not supported"
    return "Script must contain a top-level main() function"


def run():
    payload = json.loads(sys.stdin.buffer.read())
    # The script gets an empty stdin, not the rest of the request.
    null_fd = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null_fd, 0)
    _close(null_fd)

    script = payload["script"]
    args = payload.get("args") or {}
    try:
        tree = ast.parse(script, filename=SCRIPT_FILENAME)
    except SyntaxError as exc:
        _report({
            "status": "syntax_error",
            "message": "%s (line %s, column %s)" % (exc.msg, exc.lineno, exc.offset),
            "line": exc.lineno,
            "column": exc.offset,
        })
        return
    except (ValueError, RecursionError, MemoryError) as exc:
        _report({"status": "syntax_error", "message": _describe(exc), "line": None, "column": None})
        return
    problem = _has_top_level_main(tree)
    if problem is not None:
        _report({"status": "missing_main", "message": problem})
        return

    namespace = {"__name__": "__pyexec_script__", "__builtins__": __builtins__}
    try:
        code = compile(tree, SCRIPT_FILENAME, "exec")
        exec(code, namespace)
        main = namespace.get("main")
        if _type(main) is not _FunctionType:
            _report({"status": "missing_main", "message": "main is not a function"})
            return
        value = main(**args)
    except BaseException as exc:  # noqa: B036 - SystemExit and KeyboardInterrupt are script errors too
        try:
            trace = _script_traceback(exc)
        except BaseException:
            trace = ""
        _report({
            "status": "runtime_error",
            "exception": _type(exc).__name__,
            "message": _describe(exc),
            "traceback": trace,
        })
        return

    try:
        result = _to_json_value(value, _numpy_scalar_type(), 0, set())
    except NotJson as exc:
        _report({"status": "non_json", "message": _str(exc)})
        return
    except RecursionError:
        _report({"status": "non_json", "message": "the result is nested too deeply"})
        return
    except BaseException as exc:
        _report({"status": "non_json", "message": "the result could not be converted: %s" % _describe(exc)})
        return
    _report({"status": "ok", "result": result})


if __name__ == "__main__":
    run()
