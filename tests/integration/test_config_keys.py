"""Every config section checks its keys: a key no code reads there (a typo,
or a key written under the wrong section) stops every command that reads
the config with exit 2, naming the file and line, the section and the key,
before anything is done, instead of leaving a default silently in force.
The message says where a misplaced key belongs, or which key a typo meant,
or else which keys the section takes; those lists must agree with what the
shipped example and mpfarm.conf(5) document.
"""
import re

import pytest

from conftest import REPO

ETC = REPO / "etc"
MAN5 = REPO / "mpfarm.conf.5"
PROVIDERS = ("elevenlabs", "openai", "deepl", "exec", "noop")
# every section whose keys are listed: all but [farm] (config_farm_set
# owns its keys) and [roots] (any name is a root)
LISTED = ("serve", "transcribe", "translate", "translate.he") + PROVIDERS

BASE = """[transcribe]
provider = noop
[translate]
provider = noop
languages = en
"""
BASE_LINES = BASE.count("\n")


def commands(farm):
    """Every kind of command that reads the config: the ones that only
    look, a real run, a dry run and a scan."""
    farm.media.mkdir(exist_ok=True)
    return (["config"], ["run"], ["run", "--dry-run"], ["scan", farm.media],
            ["status"])


def assert_refused(farm, section, key, line):
    """Every command exits 2 with one message naming file:line, section
    and key, and leaves no database or output behind."""
    for cmd in commands(farm):
        p = farm.run(*cmd)
        assert p.returncode == 2, (cmd, p.stdout, p.stderr)
        err = p.stderr.strip()
        assert len(err.splitlines()) == 1, (cmd, err)
        assert "mpfarm.conf:%d:" % line in err, (cmd, err)
        assert 'unknown key "%s" in [%s]' % (key, section) in err, (cmd, err)
        assert p.stdout == "", (cmd, p.stdout)
    assert not (farm.path / "media_tracking.db").exists()
    assert not farm.output.exists()
    return err


@pytest.mark.parametrize("section", LISTED)
def test_unknown_key_in_every_section(farm, section):
    # the bad key after a good one, so that the line is not the first
    good = {"serve": "listen = 127.0.0.1:8080",
            "transcribe": "language = en", "translate": "model = m",
            "translate.he": "provider = noop", "elevenlabs": "rate = 2",
            "openai": "rate = 2", "deepl": "rate = 2",
            "exec": "transcribe_command = true", "noop": "delay_ms = 0"}
    if section in ("transcribe", "translate"):
        text = BASE.replace("[%s]\n" % section,
                            "[%s]\n%s\nbogus_setting = 3\n" % (
                                section, good[section]))
        line = BASE.split("\n").index("[%s]" % section) + 3
    else:
        text = BASE + "[%s]\n%s\nbogus_setting = 3\n" % (section,
                                                         good[section])
        line = BASE_LINES + 3
    farm.write_config(text)
    err = assert_refused(farm, section, "bogus_setting", line)
    # far from every key and belonging nowhere: the section's keys listed
    assert "(it takes " in err, err


@pytest.mark.parametrize("text,section,key,hint", [
    # the reports that started this: a typo, a made-up key, a [farm] key
    # written under a provider
    ("[openai]\nmax_concurency = 2\n", "openai", "max_concurency",
     "did you mean max_concurrency?"),
    ("[deepl]\nbogus = 3\n", "deepl", "bogus", "(it takes base_url, "),
    ("[deepl]\nhost_timeout = 2\n", "deepl", "host_timeout",
     "did you mean [farm] host_timeout?"),
    # the other way round: a provider's limit under [farm]
    ("[farm]\nmax_concurrency = 2\n", "farm", "max_concurrency",
     "did you mean [elevenlabs] max_concurrency, [openai] max_concurrency "
     "or [deepl] max_concurrency?"),
    ("[farm]\ndelay_ms = 5\n", "farm", "delay_ms",
     "did you mean [noop] delay_ms?"),
    # stage keys in the wrong stage or in a provider section
    ("[translate.he]\nlanguages = en\n", "translate.he", "languages",
     "did you mean [translate] languages?"),
    ("[transcribe]\nlanguages = en\n", "transcribe", "languages",
     "did you mean [translate] languages?"),
    ("[openai]\nlanguage = en\n", "openai", "language",
     "did you mean [transcribe] language?"),
    ("[exec]\ncommand = true\n", "exec", "command",
     "did you mean [transcribe] command or [translate] command?"),
    ("[deepl]\nprovider = deepl\n", "deepl", "provider",
     "did you mean [transcribe] provider or [translate] provider?"),
    # a provider's own key under another provider or a stage
    ("[deepl]\nmodel = gpt-4o\n", "deepl", "model",
     "did you mean [transcribe] model, [translate] model or [openai] "
     "model?"),
    ("[transcribe]\ndiarize = true\n", "transcribe", "diarize",
     "did you mean [elevenlabs] diarize?"),
    ("[noop]\nbase_url = http://x\n", "noop", "base_url",
     "did you mean [elevenlabs] base_url, [openai] base_url or [deepl] "
     "base_url?"),
    ("[serve]\nlisen = 1\n", "serve", "lisen",
     "did you mean listen?"),
    ("[translate]\nlangauges = en\n", "translate", "langauges",
     "did you mean languages?"),
])
def test_misplaced_or_misspelt_key_gets_a_hint(farm, text, section, key,
                                               hint):
    farm.write_config(text)
    err = assert_refused(farm, section, key, text.count("\n"))
    assert hint in err, err


@pytest.mark.parametrize("farm_key,value", [
    ("host_timeout", "2"), ("workers", "2"), ("job_timeout", "60"),
    ("log_level", "debug")])
@pytest.mark.parametrize("section", ("transcribe",) + PROVIDERS)
def test_farm_key_outside_farm_names_farm(farm, section, farm_key, value):
    farm.write_config("[%s]\n%s = %s\n" % (section, farm_key, value))
    p = farm.run("config")
    assert p.returncode == 2, p.stdout
    assert ("mpfarm.conf:2: unknown key \"%s\" in [%s]; did you mean [farm] "
            "%s?" % (farm_key, section, farm_key)) in p.stderr, p.stderr


def test_the_first_bad_line_is_named(farm):
    farm.write_config(BASE + "[noop]\ndelay_ms = 1\n\n# comment\n"
                      "delya_ms = 2\n[deepl]\nbogus = 1\n")
    p = farm.run("config")
    assert p.returncode == 2
    assert "mpfarm.conf:%d: unknown key \"delya_ms\" in [noop]; did you " \
        "mean delay_ms?" % (BASE_LINES + 5) in p.stderr, p.stderr


def test_roots_take_any_name(farm):
    farm.media.mkdir()
    farm.write_config(BASE + "[roots]\nanything_at_all = %s\n" % farm.media)
    p = farm.run("config")
    assert p.returncode == 0, p.stderr


def taken(farm, section):
    """The keys the binary says section takes, from the message about a key
    that is close to none of them."""
    farm.write_config("[%s]\nzz_not_a_key = 1\n" % section)
    p = farm.run("config")
    assert p.returncode == 2
    m = re.search(r"\(it takes (.*)\)$", p.stderr.strip())
    assert m, p.stderr
    return set(re.split(r", | or ", m.group(1)))


def example_keys():
    """section -> keys etc/mpfarm.conf.example shows (set or commented
    out); [translate.LANG] sections pooled as "translate.he"."""
    keys, section = {}, None
    for line in (ETC / "mpfarm.conf.example").read_text().splitlines():
        m = re.match(r"^\[([a-z.]+)\]$", line)
        if m:
            section = m.group(1)
            if section.startswith("translate."):
                section = "translate.he"
            keys.setdefault(section, set())
            continue
        m = re.match(r"^#?([a-z_]+) = ", line)
        if m and section is not None:
            keys[section].add(m.group(1))
    return keys


def test_listed_keys_are_the_documented_ones(farm):
    """What each section takes is what the example shows under it, and
    every such key is in mpfarm.conf(5): no key is accepted undocumented,
    none documented is refused."""
    shown = example_keys()
    man = MAN5.read_text().replace("\\-", "-").replace("\\&", "")
    for section in LISTED:
        keys = taken(farm, section)
        assert keys == shown[section], (section, keys ^ shown[section])
        for key in keys:
            assert re.search(r"^\.BR? %s(?: |$)" % key, man, re.M), \
                "[%s] %s missing from mpfarm.conf.5" % (section, key)


def full_example(farm):
    """etc/mpfarm.conf.example with every key uncommented, its key files
    pointing at one real key file of the farm's (mode 0600)."""
    key = farm.path / "key"
    key.write_text("k\n")
    key.chmod(0o600)
    text = (ETC / "mpfarm.conf.example").read_text()
    full = re.sub(r"^#([a-z_]+ = )", r"\1", text, flags=re.M)
    full = re.sub(r"^(api_key_file = ).*$", r"\g<1>%s" % key, full,
                  flags=re.M)
    full = re.sub(r"^(log_file = ).*$", r"\g<1>%s" % (farm.path / "log"),
                  full, flags=re.M)
    assert len(re.findall(r"^[a-z_]+ = ", full, re.M)) > 60
    return text, full


def test_example_configs_load(farm):
    """The shipped example (as shipped and with every key it shows set)
    and the demo config pass `mpfarm config`, which shows every key."""
    text, full = full_example(farm)
    demo = (ETC / "demo.conf").read_text()
    for name, body in (("shipped", text), ("full", full), ("demo", demo)):
        farm.write_config(body)
        p = farm.run("config")
        assert p.returncode == 0, (name, p.stdout, p.stderr)
        assert "unknown" not in p.stderr, (name, p.stderr)
        for key in re.findall(r"^([a-z_]+) = ", body, re.M):
            assert re.search(r"^%s = " % key, p.stdout, re.M), (name, key)


def test_example_configs_dry_run(farm):
    """The full example and the demo also pass a dry run's start-up
    checks (no media: nothing is asked of any provider)."""
    _, full = full_example(farm)
    for body in (full, (ETC / "demo.conf").read_text()):
        farm.write_config(body)
        p = farm.run("run", "--dry-run")
        assert p.returncode != 2, p.stderr
        assert "unknown key" not in p.stderr, p.stderr


def test_long_value_goes_on_over_indented_lines(farm):
    """A value longer than a config line may be (199 bytes) goes on over
    indented lines, joined with one space: a long engine command runs
    whole, and `config` shows it joined, from its first line."""
    a, b = "a" * 150, "b" * 150
    farm.write_config("""[transcribe]
provider = exec
[exec]
transcribe_command = echo %s
    %s
""" % (a, b))
    p = farm.run("config")
    assert p.returncode == 0, p.stderr
    assert "transcribe_command = echo %s %s" % (a, b) in p.stdout
    assert "mpfarm.conf:4" in p.stdout
    farm.make_media(1)
    farm.run("scan", farm.media, check=True)
    farm.run("run", check=True)
    out = farm.output / "transcripts" / "f00000.wav.txt"
    assert out.read_text() == "%s %s\n" % (a, b)


def test_a_line_too_long_says_how_to_split_it(farm):
    farm.write_config(BASE + "[exec]\ntranscribe_command = echo %s\n"
                      % ("x" * 250))
    p = farm.run("config")
    assert p.returncode == 2
    assert "mpfarm.conf:%d: line longer than 199 bytes (a long value goes " \
        "on over indented lines)" % (BASE_LINES + 2) in p.stderr, p.stderr


def test_a_key_given_twice_is_refused(farm):
    """The same key twice in a section (also across a repeated section
    header) is a mistake one of the two lines hides: refused, naming both
    lines, instead of the last one winning unseen."""
    for text, line, first in (
            (BASE + "[farm]\nworkers = 2\nworkers = 3\n", BASE_LINES + 3,
             BASE_LINES + 2),
            (BASE + "[farm]\nworkers = 2\n[exec]\ntranscribe_command = x\n"
             "[farm]\nworkers = 3\n", BASE_LINES + 6, BASE_LINES + 2),
            (BASE.replace("languages = en\n", "languages = en\n"
                          "languages = de\n"), 6, 5)):
        farm.write_config(text, raw=True)
        for cmd in (["config"], ["run", "--dry-run"]):
            p = farm.run(*cmd)
            assert p.returncode == 2, (text, p.stdout, p.stderr)
            assert "mpfarm.conf:%d:" % line in p.stderr, p.stderr
            assert "given twice (first at mpfarm.conf:%d)" % first \
                in p.stderr, p.stderr


def test_continuation_lines_read_like_first_lines(farm):
    """An indented line's "; comment" goes as on a first line; a value
    may start on the line after its key; an indented key line (a style
    of other INI files) is refused, not glued to the value above."""
    farm.write_config("""[transcribe]
provider = exec
[exec]
transcribe_command =
    echo one ; the engine
    two;three ; more
""")
    p = farm.run("config")
    assert p.returncode == 0, p.stderr
    assert re.search(r"^transcribe_command = echo one two;three +; "
                     r"mpfarm.conf:4$", p.stdout, re.M), p.stdout
    farm.write_config("""[transcribe]
provider = noop
[noop]
    delay_ms = 5
    bogus = 1
""")
    p = farm.run("config")
    assert p.returncode == 2
    assert "mpfarm.conf:5: indented key line \"bogus = 1\": a key starts " \
        "its line" in p.stderr, p.stderr
