#!/usr/bin/env python3
"""Runs every shell command quoted in a Markdown file's ```sh / ```bash blocks.

Usage: python3 .ci/readme_commands.py README.md [more.md ...]

CI runs it after `make up` and `make demo`, so the commands run against the live stack,
from the repository root, in order, one block at a time (an `export` holds for the rest
of its block). Comments and backslash continuations are handled. A command fails the run
when it exits non-zero or takes longer than COMMAND_TIMEOUT seconds; its output is shown.

Not every command can run here. SKIPPED below is the documented list: each pattern says
why its commands are not run by this script (most are run by `.ci/run` itself). A block
can also opt out with `<!-- readme-commands: skip (reason) -->` on the line before it.
"""

import os
import re
import subprocess
import sys
import time

COMMAND_TIMEOUT = 600

# (pattern matched against the whole command, reason). Keep this list short: a command
# that can run in CI should.
SKIPPED = [
    (r"^make (up|demo|test)\b", "run by .ci/run itself (make test, make up, make demo)"),
    (r"^SECURITY=plaintext make up\b", "switching modes needs make clean, which would wipe CI's stack"),
    (r"^make clean\b", "wipes the data and secrets of the stack CI is still using"),
    (r"^make down\b", "CI stops the stack at the end (trap in .ci/run)"),
    (r"^make bench\b", "the full benchmark takes longer than CI's budget allows"),
    (r"^cargo test -p \S+", "every crate's and test file's tests run in `make test`"),
    (r"^git clone\b", "CI itself runs from a fresh clone"),
    (r"^cd\b", "the script runs every command from the repository root"),
]

FENCE = re.compile(r"^(\s*)```(\w*)\s*$")
SKIP_MARK = re.compile(r"<!--\s*readme-commands:\s*skip\b(.*?)-->")


def blocks(path):
    """Yields (line number, [commands]) for each sh/bash block of the file."""
    lines = open(path, encoding="utf-8").read().splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        lang, start = m.group(2), i + 1
        skipped = i > 0 and SKIP_MARK.search(lines[i - 1])
        body = []
        i += 1
        while i < len(lines) and not FENCE.match(lines[i]):
            body.append(lines[i])
            i += 1
        i += 1
        if lang not in ("sh", "bash", "shell"):
            continue
        if skipped:
            print(f"[readme] {path}:{start}: block skipped ({skipped.group(1).strip(' ()')})")
            continue
        yield start, commands(body)


def commands(body):
    """Joins continuations and drops comments and blank lines."""
    out, current = [], ""
    for raw in body:
        line = raw.rstrip()
        if line.endswith("\\"):
            current += line[:-1].strip() + " "
            continue
        current += line.strip()
        command = strip_comment(current).strip()
        current = ""
        if command:
            out.append(command)
    return out


def strip_comment(command):
    """Removes a trailing `# comment` that is outside quotes."""
    quote = None
    for i, ch in enumerate(command):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or command[i - 1].isspace()):
            return command[:i]
    return command


def skip_reason(command):
    for pattern, reason in SKIPPED:
        if re.search(pattern, command):
            return reason
    return None


def run_block(path, start, cmds, env):
    failures = 0
    for command in cmds:
        reason = skip_reason(command)
        if reason:
            print(f"[readme] skip  {command}  ({reason})")
            continue
        m = re.fullmatch(r"export (\w+)=(.*)", command)
        if m:
            value = subprocess.run(
                ["bash", "-c", f'printf %s {m.group(2)}'], env=env, capture_output=True, text=True
            ).stdout
            env[m.group(1)] = value
            print(f"[readme] set   {m.group(1)}")
            continue
        t0 = time.monotonic()
        try:
            done = subprocess.run(
                ["bash", "-o", "pipefail", "-c", command],
                env=env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT,
            )
            ok, output = done.returncode == 0, done.stdout + done.stderr
            why = f"exit {done.returncode}"
        except subprocess.TimeoutExpired as e:
            ok, why = False, f"timed out after {COMMAND_TIMEOUT} s"
            output = (e.stdout or b"").decode(errors="replace") + (e.stderr or b"").decode(errors="replace")
        took = time.monotonic() - t0
        if ok:
            print(f"[readme] ok    {command}  ({took:.1f} s)")
        else:
            failures += 1
            print(f"[readme] FAIL  {command}  ({why}, {path}:{start})")
            print("\n".join("    " + l for l in output.splitlines()[-30:]))
    return failures


def main(paths):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    os.chdir(root)
    failures = ran = 0
    for path in paths:
        for start, cmds in blocks(path):
            env = dict(os.environ)
            failures += run_block(path, start, cmds, env)
            ran += 1
    print(f"[readme] {ran} block(s), {failures} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1:]))
