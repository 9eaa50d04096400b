"""In-jail harness: runs one script's main() and reports on a dedicated fd.

Protocol (the gateway's side is parse_frame in src/sandbox/outcome.rs):
  stdin   one JSON object {"script": str, "args": object}, then EOF
  fd 3    exactly one JSON frame, written once after main() returns:
            {"status": "ok", "result": <value>}
            {"status": "syntax_error", "message", "line", "column"}
            {"status": "missing_main", "message"}
            {"status": "runtime_error", "exception", "message", "traceback"}
            {"status": "non_json", "message"}
  stdout  / stderr are the script's own.

Everything the report path needs is bound here, before the script runs, so a
script that patches builtins, json or sys.modules does not break how the frame
is written. That is robustness, not the security boundary: the script runs in
this same process and could rewrite the harness itself. The boundary is the
gateway, which parses the frame strictly and trusts nothing in it beyond its
shape: a frame is at most what the script itself could have returned.
"""

import ast
import json
import json.encoder
import os
import sys
import traceback
import types

RESULT_FD = 3
SCRIPT_FILENAME = "<script>"
SCRIPT_MODULE = "__pyexec_script__"
# Below the gateway parser's own limit (serde_json stops at 128 levels, and
# the frame adds one): a deeper result is refused here, with a clear message,
# instead of arriving as a frame the gateway cannot read.
MAX_RESULT_DEPTH = 100
# JSON numbers the gateway reads exactly: anything wider would arrive rounded
# through a float, or not at all (10**400 overflows it).
_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1

_write = os.write
_getattr = getattr
_memoryview = memoryview
_set = set
_type_type = type
_getpid = os.getpid
_exit = os._exit
_close = os.close
_open = os.open
_dup2 = os.dup2
_sched_setscheduler = os.sched_setscheduler



def _make_encoder():
    # The C encoder with the C string escaper, bound now: json's Python-level
    # globals (encode_basestring, JSONEncoder.iterencode…) are looked up at
    # call time, so a script patching them would otherwise garble the frame.
    make = _getattr(json.encoder, "c_make_encoder", None)
    escape = _getattr(json.encoder, "c_encode_basestring", None)
    if make is None or escape is None:
        return json.JSONEncoder(allow_nan=False, ensure_ascii=False, separators=(",", ":")).encode

    def refuse(value):
        raise TypeError("not JSON")

    iterencode = make(None, refuse, escape, None, ":", ",", False, False, False)
    join = "".join
    return lambda value: join(iterencode(value, 0))


_encode = _make_encoder()
_isinstance = isinstance
_type = type
_str = str
_float = float
_int = int
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
    generic = _getattr(numpy, "generic", None) if numpy is not None else None
    return generic if _isinstance(generic, _type_type) else None


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
        if value_type is _int and not _INT_MIN <= value <= _INT_MAX:
            raise NotJson("the result contains an integer wider than 64 bits; return it as a string")
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
        for raw_key, item in value.items():
            numpy_key = numpy_generic is not None and _isinstance(raw_key, numpy_generic)
            item_key = raw_key.item() if numpy_key else raw_key
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


_reporter_pid = None


def _report(frame):
    _flush_output()
    if _getpid() != _reporter_pid:
        # A child the script forked has returned through main() too: only the
        # process that started the run may report, so the child just leaves.
        _exit(0)
    text = _encode(frame)
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate is not UTF-8: in a result it is refused; in an error
        # report (a script's exception message) it is replaced.
        if frame.get("status") == "ok":
            text = _encode({"status": "non_json", "message": "the result contains a lone surrogate, which is not valid UTF-8"})
        data = text.encode("utf-8", "replace")
    _release_output()
    view = _memoryview(data)
    while view:
        written = _write(RESULT_FD, view)
        view = view[written:]
    _close(RESULT_FD)
    # What is left is teardown (the exit): it yields the CPU to any process
    # that still has a request to answer.
    try:
        _sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except OSError:
        pass


def _release_output():
    # The output is complete once the report is due. Pointing stdout and
    # stderr at /dev/null lets the gateway see their end now, not only when
    # this process has exited: tearing down a pandas-sized address space
    # takes milliseconds that no response should wait for.
    null_fd = _open("/dev/null", os.O_WRONLY)
    _dup2(null_fd, 1)
    _dup2(null_fd, 2)
    _close(null_fd)


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


def _script_module():
    """The namespace the script runs in: a module registered under its name,
    so that what it defines pickles by reference (multiprocessing's Pool.map
    of a function of the script, in a forked worker that has the same
    sys.modules)."""
    module = types.ModuleType(SCRIPT_MODULE)
    module.__builtins__ = __builtins__
    sys.modules[SCRIPT_MODULE] = module
    return module.__dict__


def rehearse():
    """Goes through what run() does for a small script, short of running it
    and reporting: a warm runner calls it while it waits, so the pages these
    paths touch are its own before a request arrives."""
    tree = ast.parse("def main(n=1):\n    return {'n': n, 'items': [1.5, 'x', None]}\n", filename=SCRIPT_FILENAME)
    _has_top_level_main(tree)
    namespace = _script_module()
    try:
        exec(compile(tree, SCRIPT_FILENAME, "exec"), namespace)
        value = _to_json_value(namespace["main"](), _numpy_scalar_type(), 0, _set())
        _encode({"status": "ok", "result": value}).encode("utf-8")
    finally:
        del sys.modules[SCRIPT_MODULE]


def read_request():
    """The request (script and args) from stdin, read to EOF."""
    return json.loads(sys.stdin.buffer.read())


def run(payload=None):
    """Runs one request; a warm runner passes the request it already read."""
    global _reporter_pid
    _reporter_pid = _getpid()
    if payload is None:
        payload = read_request()
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

    namespace = _script_module()
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
        result = _to_json_value(value, _numpy_scalar_type(), 0, _set())
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
    # The report is written: the run is over. Leaving at once skips the
    # script's atexit handlers (which could write again) and does not wait for
    # threads it left running; the jail's teardown ends whatever remains.
    _flush_output()
    _exit(0)
