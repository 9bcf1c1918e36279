"""Strangers' test suites under injection, on both engines (issue 20).

    python .ci/strangers.py cpython            # with the interpreter under test
    python .ci/strangers.py urllib3 SRC_DIR    # urllib3's source tree (its sdist)
    python .ci/strangers.py gevent             # gevent installed in the interpreter

Runs a suite three times: without aia_ext, then with ``AIA_EXT_INJECT=1`` on
the native engine and on the fallback engine (every context in the process is
then ours, servers included).  A test that fails only when injected is run
again on its own, three times in that mode and once without aia_ext; it counts
when it fails every injected run and passes without aia_ext (the sandbox makes
some of urllib3's tests timing-dependent: an unreachable "tarpit" address
fails at once here).  Exits 1 when any test counts, unless ALLOWED names it.

- ``cpython``: CPython's own ``test_ssl``, ``test_httplib``,
  ``test_urllib2_localnet`` and ``test_logging`` (its HTTPHandler ships
  records over TLS: issue 31, item 2) from the interpreter's ``test``
  package;
- ``gevent``: gevent's own TLS tests, and CPython's ``test_ssl`` run under
  ``monkey.patch_all()`` by gevent's ``monkey_test`` (issue 31, item 1);
- ``urllib3``: ``test/with_dummyserver/test_https.py`` and the socket-level
  tests, in the urllib3 source tree given, with its test requirements
  installed in this interpreter.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

#: Tests allowed to fail only when injected: only ones that assert the exact
#: class of a context (``type(ctx) is ssl.SSLContext``), which a user cannot
#: depend on once a process injects anything.  None is needed today.
ALLOWED: dict[str, str] = {}

MODES = {
    "plain": {},
    "native": {"AIA_EXT_INJECT": "1", "AIA_EXT_ENGINE": "native"},
    "fallback": {"AIA_EXT_INJECT": "1", "AIA_EXT_ENGINE": "fallback"},
}
CPYTHON_SUITES = ["test_ssl", "test_httplib", "test_urllib2_localnet", "test_logging"]
#: gevent's tests of its ssl module (it ships them in its wheel).
GEVENT_TESTS = ["test__ssl", "test__socket_ssl", "test__example_wsgiserver_ssl",
                "test__monkey_ssl_warning", "test__monkey_ssl_warning2",
                "test__monkey_ssl_warning3"]
URLLIB3_FILES = ["test/with_dummyserver/test_https.py",
                 "test/with_dummyserver/test_socketlevel.py"]

_REGRTEST_FAILURE = re.compile(r"^(?:FAIL|ERROR): (\w+) \(([\w.]+?)(?:\.\1)?\)", re.M)
#: A test module that did not even import ("test test_ssl crashed"), or
#: another failure regrtest reports without naming a test.
_REGRTEST_CRASH = re.compile(r"^test (\w+) (?:crashed|failed \(uncaught)", re.M)
_PYTEST_FAILURE = re.compile(r"^(?:FAILED|ERROR) (\S+)", re.M)


def _env(mode: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIA_EXT_")}
    env.update(MODES[mode])
    return env


#: Seconds one run of a whole suite, and one run of a single test, may take.
#: A suite runs in well under a minute here; a test that hangs (urllib3's
#: test_http2_probe_blocked_per_thread leaves a worker thread blocked on the
#: HTTP/2 probe lock when its tarpit connect fails at once, as in this
#: sandbox, and the interpreter then waits for that thread at exit) must cost
#: minutes, not the whole CI budget.
SUITE_SECONDS = 900
TEST_SECONDS = 120


def _run(argv: list[str], mode: str, cwd: str | None = None, seconds: int = SUITE_SECONDS) -> str:
    """The output of ``argv`` in ``mode``; a run killed at ``seconds`` keeps what it
    printed, and says so (its failures are read from that)."""
    try:
        # The argv is this script's own: the interpreter under test and fixed names.
        done = subprocess.run(argv, env=_env(mode), cwd=cwd,  # noqa: S603
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              errors="replace", timeout=seconds, check=False)
    except subprocess.TimeoutExpired as exc:
        output = exc.output if isinstance(exc.output, str) else (exc.output or b"").decode(
            errors="replace")
        return f"{output}\n[strangers.py: killed after {seconds} s]"
    return done.stdout


def _cpython_argv(test_id: str | None = None) -> list[str]:
    argv = [sys.executable, "-m", "test", "-v", "-u", "network"]
    if test_id is None:
        return [*argv, *CPYTHON_SUITES]
    module, _, name = test_id.partition(":")
    return [*argv, module, "-m", f"*.{name}"]


def _cpython_failures(output: str) -> set[str]:
    # "ERROR: test_x (test.test_ssl.Class.test_x)" (3.11+) or "(test.test_ssl.Class)".
    failures = set()
    for name, where in _REGRTEST_FAILURE.findall(output):
        module = next((part for part in where.split(".") if part in CPYTHON_SUITES), "")
        cls = where.split(".")[-1]
        failures.add(f"{module}:{cls}.{name}")
    failures.update(f"{module}:<module>" for module in _REGRTEST_CRASH.findall(output))
    if not failures and "result: success" not in output.lower():
        failures.add("<suite>:<no result>")  # killed, or it could not start
    return failures


#: pytest, then an exit that waits for no thread: a hung test's worker thread
#: would otherwise keep the interpreter from exiting once the summary is out.
_PYTEST_THEN_EXIT = ("import os, sys, pytest; code = pytest.main(sys.argv[1:]); "
                     "sys.stdout.flush(); sys.stderr.flush(); os._exit(int(code))")


def _gevent_output(mode: str, seconds: int = SUITE_SECONDS) -> str:
    """gevent's TLS tests, then CPython's test_ssl under gevent's patch_all()."""
    import test.test_ssl  # the interpreter's own, as regrtest runs it

    own = _run([sys.executable, "-m", "gevent.tests", *GEVENT_TESTS], mode, seconds=seconds)
    stdlib = _run([sys.executable, "-m", "gevent.testing.monkey_test",
                   str(test.test_ssl.__file__)], mode, seconds=seconds)
    return f"{own}\n{stdlib}"


def _gevent_failures(output: str) -> set[str]:
    failures = {f"{where}.{name}" for name, where in _REGRTEST_FAILURE.findall(output)}
    if len(re.findall(r"\bRan \d+ tests?", output)) < 2:  # one of the two runs ended early
        failures.add("<suite>:<no result>")
    return failures


def _urllib3_argv(ids: list[str]) -> list[str]:
    # pytest-timeout (one of urllib3's test requirements) fails a hung test with
    # an exception in the main thread, and the rest of the run goes on.
    return [sys.executable, "-c", _PYTEST_THEN_EXIT, "-q", "-p", "no:cacheprovider", "-rfE",
            "--timeout=60", "--timeout-method=signal", *ids]


def main() -> int:
    suite = sys.argv[1]
    source = sys.argv[2] if len(sys.argv) > 2 else None
    results: dict[str, set[str]] = {}
    for mode in MODES:
        started = time.monotonic()
        if suite == "cpython":
            output = _run(_cpython_argv(), mode)
            results[mode] = _cpython_failures(output)
        elif suite == "gevent":
            output = _gevent_output(mode)
            results[mode] = _gevent_failures(output)
        else:
            output = _run(_urllib3_argv(URLLIB3_FILES), mode, cwd=source)
            results[mode] = set(_PYTEST_FAILURE.findall(output))
        summary = output.strip().splitlines()[-1] if output.strip() else "(no output)"
        print(f"{suite} {mode}: {len(results[mode])} failing, {time.monotonic() - started:.0f} s"
              f" ({summary})", flush=True)
    counted = []
    for mode in ("native", "fallback"):
        for test in sorted(results[mode] - results["plain"]):
            if _confirmed(suite, source, mode, test):
                counted.append((mode, test))
    bad = [(mode, test) for mode, test in counted if test not in ALLOWED]
    for mode, test in counted:
        note = f"  (allowed: {ALLOWED[test]})" if test in ALLOWED else ""
        print(f"fails only when injected ({mode}): {test}{note}")
    print(f"{suite}: {len(bad)} test(s) fail only when injected")
    return 1 if bad else 0


def _fails(suite: str, source: str | None, mode: str, test: str) -> bool:
    if test.endswith(("<module>", "<no result>")):
        return True  # the whole run failed in this mode: nothing to run alone
    if suite == "cpython":
        output = _run(_cpython_argv(test), mode, seconds=TEST_SECONDS)
        # "Result: SUCCESS" (3.11+), "Tests result: SUCCESS" (3.9, 3.10).
        return "result: success" not in output.lower()
    if suite == "gevent":  # the whole run again (seconds): is the test among its failures?
        return test in _gevent_failures(_gevent_output(mode))
    output = _run(_urllib3_argv([test]), mode, cwd=source, seconds=TEST_SECONDS)
    return bool(_PYTEST_FAILURE.search(output)) or " passed" not in output


def _confirmed(suite: str, source: str | None, mode: str, test: str) -> bool:
    """Whether ``test`` fails every time in ``mode`` and passes without aia_ext."""
    if not all(_fails(suite, source, mode, test) for _ in range(3)):
        print(f"flaky, not counted ({mode}): {test}")
        return False
    if test.endswith(("<module>", "<no result>")):
        return True  # the run without aia_ext did not fail this way
    if _fails(suite, source, "plain", test):
        print(f"fails without aia_ext too, not counted ({mode}): {test}")
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
