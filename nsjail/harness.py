"""In-jail harness: runs one script's main() and reports on a dedicated fd.

Protocol (the gateway's side is parse_frame in src/sandbox/outcome.rs):
  stdin   one JSON object, then EOF: {"script": str, "args": object,
            "files": [{"path", "content" (base64)}], "output_files": int,
            "output_file_bytes": int}
  fd 3    exactly one JSON frame, written once after main() returns:
            {"status": "ok", "result": <value>, "files": [{"path", "content"}]}
            {"status": "output_too_large", "message"}
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
import binascii
import errno
import json
import json.encoder
import os
import stat
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
_ELOOP = errno.ELOOP
_dup2 = os.dup2
_sched_setscheduler = os.sched_setscheduler
_scandir = os.scandir
_lstat = os.lstat
_fstat = os.fstat
_read = os.read
_S_ISDIR = stat.S_ISDIR
_S_ISREG = stat.S_ISREG
_b2a_base64 = binascii.b2a_base64
_sorted = sorted
_len = len

WORK_DIR = "/tmp"
# Every regular file left here when main() returns comes back (the gateway
# checks the frame against the same limits: src/sandbox/files.rs).
OUTPUT_DIR = "/tmp/out"
MAX_PATH_DEPTH = 8



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


class OutputTooLarge(Exception):
    pass


def write_input_files(files):
    """The request's files, under the run's own /tmp (paths checked by the
    gateway), and the empty folder whose files come back."""
    for entry in files:
        path = os.path.join(WORK_DIR, entry["path"])
        folder = os.path.dirname(path)
        if folder != WORK_DIR:
            os.makedirs(folder, exist_ok=True)
        data = binascii.a2b_base64(entry["content"])
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
    os.makedirs(OUTPUT_DIR, exist_ok=True)


def _output_paths(max_files):
    """(path relative to /tmp/out, full path) of every regular file there,
    without following a symlink; refused past max_files or 8 levels."""
    try:
        if not _S_ISDIR(_lstat(OUTPUT_DIR).st_mode):
            return []
    except OSError:
        return []
    found = []
    pending = [("", OUTPUT_DIR, 1)]
    while pending:
        relative, folder, depth = pending.pop()
        with _scandir(folder) as entries:
            for entry in entries:
                name = relative + "/" + entry.name if relative else entry.name
                try:
                    name.encode("utf-8")
                except UnicodeEncodeError:
                    raise NotJson("the name of a file in /tmp/out is not UTF-8, which JSON cannot carry") from None
                if entry.is_symlink():
                    continue
                if entry.is_dir(follow_symlinks=False):
                    pending.append((name, entry.path, depth + 1))
                elif entry.is_file(follow_symlinks=False):
                    if depth > MAX_PATH_DEPTH:
                        raise OutputTooLarge("a file in /tmp/out is more than %d levels deep" % MAX_PATH_DEPTH)
                    found.append((name, entry.path))
                    if _len(found) > max_files:
                        raise OutputTooLarge(
                            "the script left more than %d files in /tmp/out, the tenant's maxOutputFiles" % max_files)
    return _sorted(found)


def collect_output_files(max_files, max_bytes):
    """The files of /tmp/out for the frame: sorted, base64, within limits."""
    files = []
    left = max_bytes
    too_large = "the files the script left in /tmp/out hold more than %d bytes, the tenant's maxOutputFileBytes" % max_bytes
    for name, path in _output_paths(max_files):
        try:
            fd = _open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            continue  # gone since it was listed
        except OSError as error:
            if error.errno == _ELOOP:
                continue  # replaced by a symlink since it was listed
            # A file the script made unreadable: an error its author sees,
            # never a file silently left out.
            raise
        try:
            if not _S_ISREG(_fstat(fd).st_mode):
                continue
            chunks = []
            while True:
                chunk = _read(fd, min(left + 1, 1 << 20))
                if not chunk:
                    break
                chunks.append(chunk)
                left -= _len(chunk)
                if left < 0:
                    raise OutputTooLarge(too_large)
        finally:
            _close(fd)
        content = _b2a_base64(b"".join(chunks), newline=False).decode("ascii")
        files.append({"path": name, "content": content})
    return files


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
    try:
        write_input_files(payload.get("files") or [])
    except OSError as exc:
        _report({
            "status": "runtime_error",
            "exception": _type(exc).__name__,
            "message": "an input file could not be written before main() ran: %s" % _describe(exc),
            "traceback": "",
        })
        return

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
    try:
        files = collect_output_files(int(payload.get("output_files", 0)), int(payload.get("output_file_bytes", 0)))
    except OutputTooLarge as exc:
        _report({"status": "output_too_large", "message": _str(exc)})
        return
    except NotJson as exc:
        _report({"status": "non_json", "message": _str(exc)})
        return
    except OSError as exc:
        _report({"status": "runtime_error", "exception": _type(exc).__name__,
                 "message": "/tmp/out could not be read after main() returned: %s" % _describe(exc), "traceback": ""})
        return
    _report({"status": "ok", "result": result, "files": files})


if __name__ == "__main__":
    run()
    # The report is written: the run is over. Leaving at once skips the
    # script's atexit handlers (which could write again) and does not wait for
    # threads it left running; the jail's teardown ends whatever remains.
    _flush_output()
    _exit(0)
