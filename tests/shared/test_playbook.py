import logging
import re
import textwrap
from pathlib import Path

import pytest

from activecall.playbook import (
    AsrSettings,
    DtmfAction,
    FollowUp,
    HeaderMap,
    Interruption,
    LlmSettings,
    PlaybookError,
    PlaybookNotFoundError,
    ScriptRule,
    TtsSettings,
    call_variables,
    check_playbook_main,
    find_playbook,
    load_playbook,
    parse_playbook,
    render,
    rewrite_header_names,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"
LOGGER = "activecall.playbook"


def doc(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def error_of(text: str, filename: str = "pb.md") -> PlaybookError:
    with pytest.raises(PlaybookError) as info:
        parse_playbook(doc(text), filename)
    return info.value


def messages(text: str) -> list[str]:
    return [str(e) for e in error_of(text).errors]


FULL = """
---
greeting: "Hello {{ name }}"
llm:
  provider: anthropic
  model: claude-sonnet-4-5
  max_tokens: 200
  temperature: 0.5
asr:
  engine: vosk
  language: en-US
  hints: [billing, "account number"]
tts:
  engine: piper
  voice: en_US-joe-medium
  speed: 1.25
interruption:
  enabled: false
  guard_ms: 250
  min_speech_ms: 120
dtmf:
  1: {action: goto, scene: second}
  "#": {action: transfer, target: "sip:desk@pbx.example.com"}
  0: {action: hangup, text: Bye}
  "*": {action: say, text: "Press 1"}
variables:
  name: Sam
  count: 3
follow_up:
  timeout_s: 7.5
  max_count: 3
  text: Still there?
  final_text: Bye now.
max_duration_s: 120
rules:
  - match: '^hi\\b'
    say: Hi!
  - keywords: [good bye, ciao]
    say: Bye
    action: hangup
  - dtmf: 5
    say: Transferring
    action: transfer
fallback: Say again?
transfer_target: "sip:main@pbx.example.com"
---
Common text.

# Scene: first
First text.

# Scene: second
Second text.
"""


def test_full_front_matter_is_parsed() -> None:
    pb = parse_playbook(doc(FULL), "full.md")
    assert pb.filename == "full.md"
    assert pb.greeting == "Hello {{ name }}"
    assert pb.llm == LlmSettings("anthropic", "claude-sonnet-4-5", 200, 0.5)
    assert pb.asr == AsrSettings("vosk", "en-US", ("billing", "account number"))
    assert pb.tts == TtsSettings("piper", "en_US-joe-medium", 1.25)
    assert pb.interruption == Interruption(False, 250, 120)
    assert pb.dtmf == {
        "1": DtmfAction("1", "goto", scene="second"),
        "#": DtmfAction("#", "transfer", target="sip:desk@pbx.example.com"),
        "0": DtmfAction("0", "hangup", text="Bye"),
        "*": DtmfAction("*", "say", text="Press 1"),
    }
    assert pb.dtmf["1"].line == 21
    assert pb.variables == {"name": "Sam", "count": 3}
    assert pb.follow_up == FollowUp(7.5, 3, "Still there?", "Bye now.")
    assert pb.max_duration_s == 120.0
    assert [r.line for r in pb.rules] == [35, 37, 40]
    assert pb.rules[1].keywords == ("good bye", "ciao")
    assert pb.rules[1].action == "hangup"
    # A transfer without its own target takes the playbook's.
    assert pb.rules[2] == ScriptRule(
        say="Transferring", dtmf="5", action="transfer", target="sip:main@pbx.example.com"
    )
    assert pb.fallback == "Say again?"
    assert pb.preamble == "Common text."
    assert pb.scene_names == ("first", "second")
    assert pb.start_scene.name == "first"
    assert pb.scene("second").text == "Second text."
    assert pb.scene("second").line == 51


def test_defaults_and_body_without_front_matter() -> None:
    pb = parse_playbook("You are helpful.\n", "plain.md")
    assert pb.scene_names == ("main",)
    assert pb.preamble == ""
    assert pb.start_scene.text == "You are helpful."
    assert pb.greeting is None
    assert pb.llm == LlmSettings(None, None, None, None)
    assert pb.interruption == Interruption(True, None, None)
    assert pb.tts.speed == 1.0
    assert pb.follow_up is None
    assert pb.render_greeting({}) == ""
    assert pb.system_prompt(None, {}) == "You are helpful."


def test_empty_front_matter() -> None:
    pb = parse_playbook("---\n---\nBody\n", "e.md")
    assert pb.start_scene.text == "Body"


@pytest.mark.parametrize(
    ("name", "scenes", "dtmf", "provider"),
    [
        ("greeting.md", ("main",), [], "auto"),
        ("sales.md", ("intro", "qualify", "pitch"), [], "auto"),
        ("ivr.md", ("menu", "billing"), ["*", "0", "1", "2", "9"], "scripted"),
    ],
)
def test_examples_load(name: str, scenes: tuple[str, ...], dtmf: list[str], provider: str) -> None:
    pb = load_playbook(EXAMPLES / name)
    assert pb.scene_names == scenes
    assert sorted(pb.dtmf) == dtmf
    assert pb.llm.provider == provider
    assert pb.greeting
    assert pb.fallback


def test_greeting_example_uses_the_twilio_header_safely(caplog: pytest.LogCaptureFixture) -> None:
    pb = load_playbook(EXAMPLES / "greeting.md")
    with_sid = call_variables(caller="+15551230000", headers={"X-Twilio-CallSid": "CA0123"})
    prompt = pb.system_prompt(None, with_sid)
    assert "the caller is +15551230000,\nthe Twilio call reference is CA0123." in prompt
    caplog.set_level(logging.WARNING, LOGGER)
    prompt = pb.system_prompt(None, call_variables())
    assert "the Twilio call reference is not available." in prompt
    assert pb.render_greeting({}) == "Hello, thanks for calling Example Corp. How can I help you today?"
    assert caplog.records == []
    goodbye = pb.match_text("okay, bye!")
    assert goodbye is not None and goodbye.action == "hangup"


def test_ivr_example_menu() -> None:
    pb = load_playbook(EXAMPLES / "ivr.md")
    assert pb.dtmf["1"].action == "goto" and pb.dtmf["1"].scene == "billing"
    assert pb.dtmf["2"].action == "transfer" and pb.dtmf["2"].target == "sip:support@pbx.example.com"
    assert pb.dtmf["0"].action == "hangup"
    # In the billing scene key 1 is the scene's own rule, not the main menu's.
    billing_one = pb.on_dtmf("1", "billing", scripted=True)
    assert isinstance(billing_one, ScriptRule) and billing_one.say.startswith("Your balance is")
    assert pb.on_dtmf("1", "menu", scripted=True) == pb.dtmf["1"]
    assert pb.on_dtmf("1", "billing", scripted=False) == pb.dtmf["1"]
    assert pb.on_dtmf("7", "menu", scripted=True) is None
    speech = pb.match_text("I'd like to pay my bill", "menu")
    assert speech is not None and speech.scene == "billing"


def test_sales_example_flow() -> None:
    pb = load_playbook(EXAMPLES / "sales.md")
    variables = {"customer_name": "Sam"}
    assert pb.render_greeting(variables) == (
        "Hi Sam, this is Alex from Example Corp. "
        "Do you have a minute to hear about our new business phone plan?"
    )
    assert pb.render_greeting({}).startswith("Hi, this is Alex")
    rule = pb.match_text("yes, go ahead", "intro")
    assert rule is not None and (rule.action, rule.scene) == ("goto", "qualify")
    rule = pb.match_text("can I talk to a real person", "pitch")
    assert rule is not None and rule.target == "sip:+18005550100@yourdomain.pstn.twilio.com"
    prompt = pb.system_prompt("pitch", variables)
    assert prompt.startswith("You are Alex, a polite sales representative of Example Corp, calling Sam")
    assert "Explain the plan" in prompt
    assert "```" not in prompt and "rules:" not in prompt


# ---------------------------------------------------------------------------- errors


def test_unknown_key_names_closest_and_line() -> None:
    err = error_of(
        """
        ---
        greeting: hi
        greting: hi
        ---
        """
    )
    assert (err.filename, err.line) == ("pb.md", 3)
    assert err.message == "greting: unknown key 'greting'; did you mean 'greeting'?"
    assert str(err) == "pb.md:3: greting: unknown key 'greting'; did you mean 'greeting'?"
    assert isinstance(err, ValueError)


def test_unknown_nested_key_and_no_close_match() -> None:
    assert messages(
        """
        ---
        llm:
          provider: auto
          tempreature: 0.3
        tts:
          colour: red
        ---
        """
    ) == [
        "pb.md:4: llm.tempreature: unknown key 'tempreature'; did you mean 'temperature'?",
        "pb.md:6: tts.colour: unknown key 'colour'; known keys: engine, voice, speed",
    ]


def test_wrong_types_name_key_and_type() -> None:
    assert messages(
        """
        ---
        llm:
          max_tokens: many
          temperature: 2
        interruption:
          enabled: "yes"
        asr:
          hints: billing
        tts:
          voice: 12
        max_duration_s: true
        follow_up: 5
        ---
        """
    ) == [
        "pb.md:3: llm.max_tokens: expected an integer, got a string ('many')",
        "pb.md:4: llm.temperature: must be at least 0 and at most 1, got 2",
        "pb.md:6: interruption.enabled: expected a boolean (true or false), got a string ('yes')",
        "pb.md:8: asr.hints: expected a list of strings, got a string ('billing')",
        "pb.md:10: tts.voice: expected a string, got an integer (12) (quote it to keep it as text)",
        "pb.md:11: max_duration_s: expected a number, got a boolean",
        "pb.md:12: follow_up: expected a mapping, got an integer (5)",
    ]


def test_choice_suggests_closest() -> None:
    err = error_of("---\nllm:\n  provider: antropic\n---\n")
    assert str(err) == (
        "pb.md:3: llm.provider: expected one of anthropic, scripted, auto, got 'antropic'; "
        "did you mean 'anthropic'?"
    )


def test_yaml_syntax_error_line() -> None:
    err = error_of("---\ngreeting: hi\nllm: [unclosed\nfallback: x\n---\n")
    assert str(err) == "pb.md:4: not valid YAML: expected ',' or ']', but got ':'"


def test_front_matter_not_a_mapping() -> None:
    assert str(error_of("---\n- a\n- b\n---\n")) == "pb.md:2: front matter: expected a mapping, got a list"


def test_unclosed_front_matter() -> None:
    assert str(error_of("---\ngreeting: hi\n")) == (
        "pb.md:1: front matter opened with '---' is never closed by a '---' line"
    )


def test_duplicate_key() -> None:
    assert messages("---\ngreeting: a\nfallback: b\ngreeting: c\n---\n") == [
        "pb.md:4: greeting: duplicate key (first on line 2)"
    ]


def test_template_syntax_error_lines() -> None:
    assert messages(
        """
        ---
        greeting: "Hello {{ name"
        fallback: |
          Line one
          Line two {% if %}
        ---
        Preamble
        {{ broken( }}
        # Scene: one
        ok {{ fine }}

        {% for x in %}
        """
    ) == [
        "pb.md:2: greeting: template syntax error: unexpected end of template, "
        "expected 'end of print statement'.",
        "pb.md:5: fallback: template syntax error: Expected an expression, got 'end of statement block'",
        "pb.md:8: preamble: template syntax error: unexpected '}', expected ')'",
        "pb.md:12: scene one: template syntax error: Expected an expression, got 'end of statement block'",
    ]


def test_rule_errors() -> None:
    assert messages(
        """
        ---
        rules:
          - say: no trigger
          - match: a
            keywords: [b]
            say: two triggers
          - match: '(unclosed'
            say: x
          - keywords: []
            say: x
          - dtmf: 12
            say: x
          - keywords: [x]
            action: hangup
          - keywords: [x]
            say: x
            action: goto
          - keywords: [x]
            say: x
            action: hangup
            scene: a
          - keywords: [x]
            say: x
            action: dial
          - just a string
        ---
        """
    ) == [
        "pb.md:3: rules[0]: needs exactly one of match, keywords, dtmf",
        "pb.md:4: rules[1]: needs exactly one of match, keywords, dtmf (found match, keywords)",
        "pb.md:7: rules[2].match: invalid regular expression: "
        "missing ), unterminated subpattern at position 0",
        "pb.md:9: rules[3].keywords: needs at least one keyword",
        "pb.md:11: rules[4].dtmf: expected a DTMF key (0-9, *, #, A-D; quote * and #), got an integer (12)",
        "pb.md:13: rules[5]: 'say' is required",
        "pb.md:15: rules[6]: action goto needs a scene",
        "pb.md:21: rules[7].scene: only used with action goto",
        "pb.md:24: rules[8].action: expected one of hangup, transfer, goto, got 'dial'",
        "pb.md:25: rules[9]: expected a mapping (a rule), got a string ('just a string')",
    ]


def test_dtmf_errors() -> None:
    assert messages(
        """
        ---
        dtmf:
          E: {action: hangup}
          1: {action: say}
          2: {scene: menu}
          3: {action: goto, scene: nowhere}
          4: {action: transfer}
          5: {action: hangup, target: x}
        ---
        """
    ) == [
        "pb.md:3: dtmf key: expected a DTMF key (0-9, *, #, A-D; quote * and #), got a string ('E')",
        "pb.md:4: dtmf.1: action say needs a text",
        "pb.md:5: dtmf.2: 'action' is required (goto, transfer, hangup, say)",
        "pb.md:6: dtmf.3: no scene 'nowhere'; scenes: main",
        "pb.md:7: dtmf.4: transfer needs a target or transfer_target",
        "pb.md:8: dtmf.5.target: only used with action transfer",
    ]


def test_goto_unknown_scene_suggests() -> None:
    text = """
    ---
    rules:
      - keywords: [pay]
        say: ok
        action: goto
        scene: biling
    ---
    # Scene: menu
    # Scene: billing
    """
    assert messages(text) == ["pb.md:3: rules[0]: no scene 'biling'; did you mean 'billing'?"]


def test_variable_errors() -> None:
    assert messages("---\nvariables:\n  caller: x\n  my-var: 1\n  ok_name: [1, 2]\n---\n") == [
        "pb.md:3: variables.caller: 'caller' is set by every call and cannot be redefined",
        "pb.md:4: variables.my-var: a variable name is letters, digits and _ (not 'my-var')",
    ]


def test_scene_errors() -> None:
    assert messages(
        """
        Preamble
        ```yaml
        rules:
          - keywords: [a]
            say: b
        ```
        # Scene: one
        # Scene: one
        # Scene: two words
        # Scene: three
        ```yaml
        rules:
          - keywords: [a]
            say: b
        ```
        ```yaml
        rules: []
        ```
        ```yaml
        rules:
          - keywords: [a]
            sya: b
        ```
        """
    ) == [
        "pb.md:2: a rules block belongs in a scene; put shared rules in the front matter",
        "pb.md:8: scene 'one' already defined on line 7",
        "pb.md:9: scene name 'two words': use letters, digits, '_', '-' and '.'",
        "pb.md:16: this part already has a rules block (line 11)",
        "pb.md:19: this part already has a rules block (line 11)",
    ]


def test_scene_rules_block_errors_point_into_the_block() -> None:
    assert messages(
        """
        # Scene: one
        ```yaml
        rules:
          - keywords: [a]
            sya: b
            say: "{{ oops"
        ```
        """
    ) == [
        "pb.md:5: scene one.rules[0].sya: unknown key 'sya'; did you mean 'say'?",
        "pb.md:6: scene one.rules[0].say: template syntax error: unexpected end of template, "
        "expected 'end of print statement'.",
    ]


def test_unclosed_rules_block() -> None:
    assert messages("# Scene: one\n```yaml\nrules: []\n") == ["pb.md:2: rules block is never closed"]


def test_scene_rules_and_fences() -> None:
    pb = parse_playbook(
        doc(
            """
            ---
            rules:
              - keywords: [bye]
                say: Bye
                action: hangup
            ---
            Shared.
            ```text
            # Scene: not-a-scene
            ```
            # Scene: start
            Start text.

            ```yaml
            rules:
              - keywords: [hello]
                say: Hi there
            ```

            After the block.
            ```yaml
            other: yaml stays in the prompt
            ```
            """
        ),
        "s.md",
    )
    assert pb.scene_names == ("start",)
    assert pb.preamble == "Shared.\n```text\n# Scene: not-a-scene\n```"
    scene = pb.scene("start")
    assert scene.text == "Start text.\n\n\nAfter the block.\n```yaml\nother: yaml stays in the prompt\n```"
    assert [r.say for r in scene.rules] == ["Hi there"]
    assert scene.rules[0].line == 16
    assert [r.say for r in pb.rules_for("start")] == ["Hi there", "Bye"]


def test_rules_block_without_scenes_belongs_to_main() -> None:
    pb = parse_playbook("Prompt.\n```yaml\nrules:\n  - dtmf: '#'\n    say: Hash\n```\n", "m.md")
    assert pb.scene("main").rules[0].dtmf == "#"
    assert pb.scene("main").text == "Prompt."


def test_errors_collect_across_front_matter_and_body() -> None:
    err = error_of("---\nfallback: '{{'\nnope: 1\n---\n{% if %}\n")
    assert [e.line for e in err.errors] == [2, 3, 5]
    assert err.line == 2


def test_unknown_scene_lookup() -> None:
    pb = parse_playbook("# Scene: a\n", "x.md")
    with pytest.raises(KeyError, match="no scene 'b'"):
        pb.scene("b")


# ---------------------------------------------------------------------------- rules


@pytest.mark.parametrize(
    ("text", "matches"),
    [
        ("Good bye then", True),
        ("good   bye", True),
        ("GOODBYE", False),
        ("ok ciao!", True),
        ("ciaociao", False),
    ],
)
def test_keywords_match_whole_words(text: str, matches: bool) -> None:
    pb = parse_playbook("---\nrules:\n  - keywords: [good bye, ciao]\n    say: x\n---\n", "k.md")
    assert pb.rules[0].matches_text(text) is matches


def test_regex_rules_are_case_insensitive_and_dtmf_rules_ignore_text() -> None:
    pb = parse_playbook("---\nrules:\n  - match: '^yes'\n    say: a\n  - dtmf: b\n    say: b\n---\n", "r.md")
    assert pb.rules[0].matches_text("Yes please")
    assert not pb.rules[0].matches_text("oh yes")
    assert not pb.rules[1].matches_text("b")
    assert pb.rules[1].matches_dtmf("b")
    assert pb.on_dtmf("B", scripted=True) == pb.rules[1]
    assert pb.on_dtmf("B", scripted=False) is None


# ---------------------------------------------------------------------------- templates


def test_rewrite_header_names() -> None:
    source = (
        "{{ X-Twilio-CallSid }} {{-P-Asserted-Identity|upper -}} {{ a - b }} {% raw %}{{ A-B }}{% endraw %}"
    )
    assert rewrite_header_names(source) == (
        '{{ sip["X-Twilio-CallSid"] }} {{- sip["P-Asserted-Identity"] |upper -}} {{ a - b }} '
        "{% raw %}{{ A-B }}{% endraw %}"
    )


def test_render_headers_and_variables(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, LOGGER)
    variables = call_variables(
        caller="+15550001",
        callee="+15550002",
        call_id="c-1",
        direction="inbound",
        headers={"X-Twilio-CallSid": "CA42", "Contact": "<sip:a@b>"},
        extra={"name": "Sam"},
    )
    template = (
        "{{ X-Twilio-CallSid }}|{{ x-twilio-callsid }}|{{ sip['X-TWILIO-CALLSID'] }}|{{ Contact }}|"
        "{{ caller }}>{{ callee }} {{ call_id }} {{ direction }} {{ name }} {{ 5 - 2 }}|"
        "{{ X-Twilio-CallSid | lower }}|{{ sip.get('contact') }}"
    )
    assert render(template, variables) == (
        "CA42|CA42|CA42|<sip:a@b>|+15550001>+15550002 c-1 inbound Sam 3|ca42|<sip:a@b>"
    )
    assert caplog.records == []


def test_render_headers_without_sip_mapping() -> None:
    assert render("{{ X-Twilio-CallSid }}", {"X-Twilio-CallSid": "CA9"}) == "CA9"


def test_unknown_variables_render_empty_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, LOGGER)
    out = render("a{{ nope }}b{{ X-Missing-Header }}c{{ nope.deeper }}d{{ sip['items'] }}e", {}, name="t.md")
    assert out == "abcde"
    assert [r.getMessage() for r in caplog.records] == [
        "t.md: unknown variables X-Missing-Header, items, nope rendered empty"
    ]


def test_defaults_and_tests_on_unknown_variables_do_not_warn(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, LOGGER)
    template = "{{ X-Missing | default('none') }} {% if maybe %}yes{% else %}no{% endif %}"
    assert render(template, {}) == "none no"
    assert caplog.records == []


@pytest.mark.parametrize(
    "template",
    ["{{ 1 / zero }}", "{{ items.append(4) }}", "{{ x.__class__.__mro__ }}", "{{ missing + 1 }}"],
)
def test_runtime_failures_render_empty(template: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, LOGGER)
    assert render(template, {"zero": 0, "items": [1], "x": ""}) == ""
    assert len(caplog.records) == 1


def test_render_syntax_error_raises() -> None:
    with pytest.raises(PlaybookError) as info:
        render("line\n{{ x", {}, name="inline")
    assert (
        str(info.value)
        == "inline:2: template syntax error: unexpected end of template, expected 'end of print statement'."
    )


def test_playbook_variables_are_defaults() -> None:
    pb = parse_playbook(
        "---\ngreeting: '{{ who }} and {{ what }}'\nvariables:\n  who: A\n  what: B\n---\nHi {{ who }}\n",
        "v.md",
    )
    assert pb.render_greeting({"what": "C"}) == "A and C"
    assert pb.system_prompt(None, {"who": "D"}) == "Hi D"


def test_system_prompt_joins_preamble_and_scene() -> None:
    pb = parse_playbook("Be kind, {{ name }}.\n\n# Scene: a\nScene A.\n# Scene: b\n\nScene B.\n", "p.md")
    assert pb.system_prompt("b", {"name": "Bot"}) == "Be kind, Bot.\n\nScene B."
    assert pb.system_prompt(None, {"name": "Bot"}) == "Be kind, Bot.\n\nScene A."


def test_header_map_is_case_insensitive() -> None:
    headers = HeaderMap({"X-Twilio-CallSid": "CA1"})
    assert headers["x-twilio-callsid"] == "CA1"
    assert "X-TWILIO-CALLSID" in headers
    assert list(headers) == ["X-Twilio-CallSid"]
    assert len(headers) == 1


# ---------------------------------------------------------------------------- files


def test_find_playbook_searches_dirs_in_order(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    (first).mkdir()
    (second / "sub").mkdir(parents=True)
    (second / "greeting.md").write_text("x")
    (second / "sub" / "deep.md").write_text("x")
    assert find_playbook("greeting.md", [first, second]) == second / "greeting.md"
    assert find_playbook("sub/deep.md", [first, second]) == second / "sub" / "deep.md"
    (first / "greeting.md").write_text("x")
    assert find_playbook("greeting.md", [first, second]) == first / "greeting.md"
    with pytest.raises(PlaybookNotFoundError) as info:
        find_playbook("missing.md", [first])
    assert str(info.value) == f"missing.md: no such playbook (searched {first})"


@pytest.mark.parametrize(
    "name",
    [
        "../secret.md",
        "sub/../../x.md",
        "/etc/passwd.md",
        "..\\x.md",
        "C:/x.md",
        ".hidden.md",
        "sub//x.md",
        "greeting",
        "greeting.txt",
        "",
        "a\x00.md",
    ],
)
def test_find_playbook_refuses_unsafe_names(name: str, tmp_path: Path) -> None:
    with pytest.raises(PlaybookError) as info:
        find_playbook(name, [tmp_path])
    assert not isinstance(info.value, PlaybookNotFoundError)
    assert info.value.message.startswith("invalid playbook name: ")


def test_load_playbook_file_errors(tmp_path: Path) -> None:
    with pytest.raises(PlaybookNotFoundError):
        load_playbook(tmp_path / "none.md")
    bad = tmp_path / "bad.md"
    bad.write_bytes(b"caf\xe9!")
    with pytest.raises(
        PlaybookError, match=re.escape("bad.md: not UTF-8 text (invalid continuation byte at byte 3)")
    ):
        load_playbook(bad)


def test_check_playbook_main(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = EXAMPLES / "ivr.md"
    assert check_playbook_main([str(good)]) == 0
    out = capsys.readouterr()
    assert out.out == (
        f"ok: {good}: 2 scenes (menu, billing), llm scripted, greeting yes, 6 rules, "
        "dtmf * 0 1 2 9, 1 variable\n"
    )
    bad = tmp_path / "bad.md"
    bad.write_text("---\nllm:\n  modle: x\n  temperature: hot\n---\n")
    assert check_playbook_main([str(good), str(bad)]) == 1
    out = capsys.readouterr()
    assert out.out.startswith("ok: ")
    assert out.err == (
        f"{bad}:3: llm.modle: unknown key 'modle'; did you mean 'model'?\n"
        f"{bad}:4: llm.temperature: expected a number, got a string ('hot')\n"
    )


def test_unsafe_yaml_tags_are_refused() -> None:
    assert messages("---\nvariables:\n  run: !!python/name:os.system\n---\n") == [
        "pb.md:3: unsupported YAML value: could not determine a constructor for the tag "
        "'tag:yaml.org,2002:python/name:os.system'"
    ]


def test_crlf_and_bom_are_accepted() -> None:
    pb = parse_playbook("\ufeff---\r\ngreeting: hi\r\n---\r\n# Scene: a\r\nText\r\n", "w.md")
    assert (pb.greeting, pb.scene_names, pb.start_scene.text) == ("hi", ("a",), "Text")


def test_backchannels_and_uninterruptible_prompts() -> None:
    pb = parse_playbook(
        doc(
            """
            ---
            interruption:
              backchannels: [vale, "de acuerdo"]
              uninterruptible: [greeting, final]
            ---
            """
        ),
        "pb.md",
    )
    assert pb.interruption.backchannels == ("vale", "de acuerdo")
    assert pb.interruption.uninterruptible == ("greeting", "final")
    assert parse_playbook(doc("---\ngreeting: Hi\n---\n"), "pb.md").interruption.backchannels is None
    assert messages("---\ninterruption:\n  uninterruptible: [greeting, intro]\n---\n") == [
        "pb.md:3: interruption.uninterruptible[1]: 'intro' is not one of "
        "greeting, answer, dtmf, follow_up, final"
    ]
