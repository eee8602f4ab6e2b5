#!/usr/bin/env python3
"""Generate docs/configuration.md from the options table, netguard.config.OPTIONS.

    python scripts/gen_config_docs.py           rewrite docs/configuration.md
    python scripts/gen_config_docs.py --check   exit 1 if it is out of date

The settings table comes from OPTIONS, the allowlist keys from ALLOWLIST_KEYS and
ALLOWLIST_FAMILIES, and the rules shown for the allowlist example are what
netguard.config.load_allowlist makes of it, so the page cannot drift from the code
(tests/test_config.py checks that the checked-in page is this script's output).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "configuration.md"

try:
    from netguard import config
except ImportError:  # run from a checkout without netguard installed
    sys.path.insert(0, str(ROOT / "src"))
    from netguard import config

EXAMPLE_TOML = """\
# allowlist.toml
version = 1

[[allowlist]]
name = "payments-api"
cidr = "10.20.0.0/16"
ports = [443, "8000-8100"]

[[allowlist]]
name = "staging-db"
family = "inet"
addr = "10.30.0.5"
port = 5432

[[allowlist]]
name = "internal-services"
host = "*.svc.internal.example"
port = 443

[[allowlist]]
name = "docker"
path = "/var/run/docker.sock"
"""

EXAMPLE_YAML = """\
# allowlist.yaml
version: 1
allowlist:
  - name: payments-api
    cidr: 10.20.0.0/16
    ports: [443, "8000-8100"]
  - name: staging-db
    family: inet
    addr: 10.30.0.5
    port: 5432
  - name: internal-services
    host: "*.svc.internal.example"
    port: 443
  - name: docker
    path: /var/run/docker.sock
"""

# What each allowlist key means, in ALLOWLIST_KEYS order.
KEY_HELP = {
    "name": "required; a non-empty string, unique in the file; shown in reports",
    "family": "optional; checked against the destination: "
    + ", ".join(f"`{f}` ({what})" for f, what in config.ALLOWLIST_FAMILIES.items()),
    "addr": "one IP address: `10.30.0.5`, `2001:db8::5`",
    "cidr": "an address block: `10.20.0.0/16`, `2001:db8::/32`",
    "host": "a host name, or `*.` and a domain: `api.example.com`, `*.svc.internal.example`",
    "path": "a unix socket path, a glob (`/run/*.sock`); `@name` for an abstract socket",
    "port": "optional; one port, an integer",
    "ports": 'optional; a list of integers and `"80,443"` / `"8000-8100"` strings, '
    "or one such string",
}

CHOICES_BY_KIND = {
    "bool": "`true`, `false` (also `1`/`0`, `yes`/`no`, `on`/`off`)",
    "rules": "rules, see [the rule grammar](#rules)",
    "path": "a file path",
    "names": "a list of words, separated by commas or whitespace",
    "text": "one word",
}


WIDTH = 92


def _wrap(text: str) -> str:
    """A paragraph or a "- " bullet, wrapped like the hand-written docs."""
    indent = "  " if text.startswith("- ") else ""
    return textwrap.fill(
        text,
        WIDTH,
        subsequent_indent=indent,
        break_long_words=False,
        break_on_hyphens=False,
    )


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _settings_table() -> list[str]:
    lines = [
        "| setting | CLI | env | ini (type) | default | choices | help |",
        "|---|---|---|---|---|---|---|",
    ]
    for opt in config.OPTIONS:
        cli = f"`{opt.flag}`"
        if opt.kind in ("rules", "path", "names", "text") and opt.metavar:
            cli = f"`{opt.flag} {opt.metavar}`"
        if opt.repeatable:
            cli += " (repeatable)"
        if opt.choices:
            choices = ", ".join(f"`{c}`" for c in opt.choices)
        else:
            choices = CHOICES_BY_KIND[opt.kind]
        default = f"`{opt.default_text}`" if opt.default_text != "none" else "none"
        lines.append(
            "| "
            + " | ".join(
                _cell(cell)
                for cell in (
                    f"`{opt.name}`",
                    cli,
                    f"`{opt.env}`",
                    f"`{opt.ini}` ({opt.ini_type})",
                    default,
                    choices,
                    opt.help,
                )
            )
            + " |"
        )
    return lines


def _example_rules() -> list[str]:
    """The rules the TOML example gives, as load_allowlist makes them."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "allowlist.toml"
        path.write_text(EXAMPLE_TOML, encoding="utf-8")
        rules = config.load_allowlist(path, display="allowlist.toml")
    lines = ["| name | rule | source |", "|---|---|---|"]
    lines += [f"| `{r.name}` | `{r}` | `{r.source}` |" for r in rules]
    return lines


BAD_ALLOWLIST = """\
version = 1

[[allowlist]]
name = "staging-db"
addr = "10.30.0.5"
cidr = "10.30.0.0/24"
"""


def _error_examples() -> list[str]:
    """Messages of a few bad settings, as netguard.config raises them."""
    cases: list[tuple[dict[str, object], dict[str, str], dict[str, object]]] = [
        ({}, {"NETGUARD_MODE": "strictt"}, {}),
        ({"default_size": "tiny"}, {}, {}),
        ({}, {}, {"verbose": "maybe"}),
        ({}, {"NETGUARD_ALLOW": "api.example.com:443, 10.0.0.1/8"}, {}),
        ({"allow": ["[2001:db8::1]:80,443", "api.example.com:https"]}, {}, {}),
    ]
    messages: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for cli, env, ini in cases:
            try:
                config.resolve(cli, env, ini, rootdir=root, inifile=root / "pyproject.toml")
            except config.ConfigError as err:
                messages.append(str(err))
            else:  # pragma: no cover - the examples are all invalid
                raise SystemExit(f"gen_config_docs: no error for {cli, env, ini}")
        path = root / "allowlist.toml"
        path.write_text(BAD_ALLOWLIST, encoding="utf-8")
        try:
            config.load_allowlist(path, display="allowlist.toml")
        except config.ConfigError as err:
            messages.append(str(err))
    return messages


def render() -> str:
    """The text of docs/configuration.md."""
    if tuple(KEY_HELP) != config.ALLOWLIST_KEYS:
        raise SystemExit("gen_config_docs: KEY_HELP does not match config.ALLOWLIST_KEYS")
    opts = {o.name: o for o in config.OPTIONS}
    mode, allow, allowlist = opts["mode"], opts["allow"], opts["allowlist"]
    version = config.ALLOWLIST_VERSION
    out: list[str] = []
    add = out.append
    add("# Configuration")
    add("")
    add(
        "<!-- Generated by scripts/gen_config_docs.py from src/netguard/config.py; "
        "do not edit by hand: edit those and run `python scripts/gen_config_docs.py`. -->"
    )
    add("")
    add(
        "Every setting can be given on the command line, in the environment, or in the "
        "ini file pytest reads (`pytest.ini`, `[tool.pytest.ini_options]` in "
        "`pyproject.toml`, `tox.ini`, `setup.cfg`). `pytest --help` lists the flags under "
        "*netguard*."
    )
    add("")
    add("## Settings")
    add("")
    out.extend(_settings_table())
    add("")
    add("## Precedence")
    add("")
    add(
        "For each setting on its own: **command line > environment > ini file > default**. "
        "The first source that gives a value wins; the lower ones are not read. pytest's "
        "`-o netguard_mode=...` overrides the ini file and counts as it."
    )
    add("")
    add(
        f"- **`allow` too.** The rules of a higher source *replace* those of the lower "
        f"ones; they do not add up. Several `{allow.flag}` flags add up among themselves. "
        f"Replacing, like every other setting, keeps one rule for everything, and lets a "
        f"CI job *narrow* what the ini file allows (`{allow.env}=...` holds exactly the "
        f"rules it names); to widen it, repeat the ini file's rules, or give the extra "
        f"ones in an allowlist file (a setting of its own, below)."
    )
    add(
        f"- **The allowlist file** is a setting of its own (`{allowlist.flag}`, resolved "
        f"the same way); its rules are always *added* to the `allow` rules."
    )
    add(
        "- **Unset values.** An empty or blank environment variable counts as unset, and "
        "so does an empty ini value. On the command line an empty value is an error for "
        f"a choice or a boolean, and *sets* `allow`, `allowlist` and `report` to nothing, "
        f"overriding the environment and the ini file (`{allowlist.flag}=`). "
        f"`{allow.env}=,` (a value with no rule in it) likewise clears the ini file's "
        "rules from the environment."
    )
    add(
        "- **Relative paths** (`allowlist`, `report`) are relative to pytest's rootdir "
        "when they come from the ini file, and to the current directory when they come "
        "from the command line or the environment."
    )
    add("")
    add("## Values")
    add("")
    add(
        f"- **Choices** (`mode`, `default_size`) are matched in any case, surrounding "
        f"spaces ignored: `{mode.env}=Strict` is `strict`."
    )
    add(
        "- **Booleans** (`verbose`) are `1`, `true`, `yes`, `on` or `0`, `false`, `no`, "
        "`off`, in any case; anything else is an error. The flag takes no value."
    )
    add("- **Paths**: see precedence above.")
    add("")
    add("### Rules")
    add("")
    add(
        "`allow` takes rules in netguard's one grammar (the same as markers and allowlist "
        "files; see [api.md](api.md#policy)): `IP`, `CIDR`, `IP:PORTS`, `CIDR:PORTS`, "
        "`[IPv6]:PORTS`, `[IPv6-CIDR]:PORTS`, `HOST`, `HOST:PORTS`, `unix:PATH`, where "
        "PORTS is `80`, `80,443`, `8000-8100` or a mix. Rules from configuration extend "
        "`medium`, `large` and `xlarge` tests; `small` tests stay hermetic."
    )
    add("")
    add(
        f"One flag, one variable or one ini line may hold several rules, separated by "
        f"commas and/or whitespace. Because port lists use commas too, an item that is "
        f"only a port or a port range continues the port list of the rule before it: "
        f"`{allow.env}='api.example.com:80,443, 10.0.0.0/8'` is the two rules "
        f"`api.example.com:80,443` and `10.0.0.0/8` (a port alone is never a rule). A "
        f"comma inside `[...]` does not separate, so a unix glob matches a literal comma "
        f"as `[,]`."
    )
    add("")
    add(
        "Each rule remembers where it came from, and errors and reports name it: "
        f"`{allow.flag}[1]`, `{allow.env}[2]`, `{allow.ini}[3] in pytest.ini` (the "
        "position among that source's rules, from 1), `allowlist.toml:12` (the line of "
        "the allowlist entry)."
    )
    add("")
    add("### Examples")
    add("")
    add("```ini")
    add("# pytest.ini")
    add("[pytest]")
    add("netguard_mode = strict")
    add("netguard_default_size = small")
    add("netguard_allow =")
    add("    10.0.0.0/8:5432")
    add("    *.internal.example:443")
    add("netguard_allowlist = ci/allowlist.toml")
    add("```")
    add("")
    add("```toml")
    add("# pyproject.toml")
    add("[tool.pytest.ini_options]")
    add('netguard_mode = "strict"')
    add('netguard_allow = ["10.0.0.0/8:5432", "*.internal.example:443"]')
    add("netguard_verbose = true")
    add("```")
    add("")
    # Run by tests/test_docs.py (the convention is in its docstring): each command's header
    # counts the two rules.
    add('<!-- doctest: shell with=passing match="netguard: mode *, 2 allow rule(s)*" -->')
    add("```sh")
    add(f"{mode.env}=warn {allow.env}='10.0.0.0/8:5432, db.internal.example' pytest")
    add(f"pytest {mode.flag}=strict {allow.flag}=127.0.0.1:8080 {allow.flag}='unix:/run/*.sock'")
    add("```")
    add("")
    add("## Errors")
    add("")
    add(
        "An invalid value stops pytest before any test runs (a usage error) with a message "
        "that names its source and what was expected:"
    )
    add("")
    add("```text")
    out.extend(_error_examples())
    add("```")
    add("")
    add("## Allowlist files")
    add("")
    add(
        "An allowlist file names each rule, so reports can say which entry let a call "
        "through. It follows the schema of netaudit's allowlist. Files ending in `.yaml` "
        "or `.yml` are YAML, which needs PyYAML (`pip install netguard[yaml]`); any other "
        "file is TOML, which needs nothing."
    )
    add("")
    add(
        f"At the top: `version = {version}` (required) and `allowlist`, a list of entries "
        "(`[[allowlist]]` tables, or an array of inline tables; it may be empty). Each "
        "entry becomes one rule and has exactly one destination, `addr`, `cidr`, `host` or "
        "`path`, and at most one of `port` and `ports` (none: any port; a `path` takes "
        "none)."
    )
    add("")
    add("| key | value |")
    add("|---|---|")
    for key, text in KEY_HELP.items():
        add(f"| `{key}` | {_cell(text)} |")
    add("")
    add("```toml")
    out.extend(EXAMPLE_TOML.rstrip("\n").splitlines())
    add("```")
    add("")
    add("The same in YAML:")
    add("")
    add("```yaml")
    out.extend(EXAMPLE_YAML.rstrip("\n").splitlines())
    add("```")
    add("")
    add("The rules the TOML file gives:")
    add("")
    out.extend(_example_rules())
    add("")
    add(
        "Every mistake is an error naming the file, the line of the entry (or key) and the "
        "offending text: a syntax error (with the parser's line), a missing or unsupported "
        "`version`, an unknown key (with a suggestion), a missing or duplicate `name`, no "
        "destination or more than one, a destination of the wrong kind (a name in `addr`, "
        "an address in `host`, a block without a prefix length in `cidr`), a port out of "
        "range, a value of the wrong type, a `family` that does not match the destination, "
        "an unreadable file."
    )
    add("")
    # Prose lines are wrapped; tables, code blocks and headings are left as they are.
    wrapped: list[str] = []
    in_code = False
    for line in out:
        if line.startswith("```"):
            in_code = not in_code
        if in_code or line.startswith(("```", "|", "#", "<!--")):
            wrapped.append(line)
        else:
            wrapped.append(_wrap(line))
    return "\n".join(wrapped)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="fail if the page is out of date")
    args = parser.parse_args(argv)
    text = render()
    current = DOC.read_text(encoding="utf-8") if DOC.exists() else None
    if args.check:
        if current != text:
            print(f"{DOC.relative_to(ROOT)} is out of date: run {Path(__file__).name}")
            return 1
        return 0
    if current != text:
        DOC.write_text(text, encoding="utf-8")
        print(f"wrote {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
