// Chat templates: every golden conversation (tests/data/chat_templates/<family>/cases.json, made
// by scripts/golden/make_chat_golden.mjs with @huggingface/jinja) renders exactly; the Jinja
// snippets render as Jinja2 does; plus the errors, limits and the Python semantics the reference
// cannot render.
#include "text/chat_template.h"
#include "tests/status_matchers.h"
#include "text/jinja_builtins.h"

#include <fstream>
#include <sstream>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace loramux {
namespace {

using Json = nlohmann::ordered_json;
using ::testing::HasSubstr;

const std::string kData = std::string(LORAMUX_TEST_DATA) + "/chat_templates";

Json ReadJson(const std::string& path) {
  std::ifstream file(path);
  EXPECT_TRUE(file) << path;
  std::stringstream text;
  text << file.rdbuf();
  return Json::parse(text.str());
}

// Renders `source` with `vars` as the template's variables (messages empty unless given).
absl::StatusOr<std::string> RenderSource(const std::string& source,
                                         const Json& vars = Json::object(),
                                         const jinja::RenderLimits& limits = {}) {
  absl::StatusOr<ChatTemplate> t = ChatTemplate::FromSource(source, {}, limits);
  if (!t.ok()) return t.status();
  return t->Render(Json::array(), false, vars);
}

std::string MustRender(const std::string& source, const Json& vars = Json::object()) {
  absl::StatusOr<std::string> out = RenderSource(source, vars);
  EXPECT_TRUE(out.ok()) << source << "\n" << out.status();
  return out.ok() ? *out : "<error>";
}

// ---- golden conversations ----

class GoldenTemplateTest : public ::testing::TestWithParam<std::string> {};

TEST_P(GoldenTemplateTest, EveryCaseRendersExactly) {
  const std::string dir = kData + "/" + GetParam();
  absl::StatusOr<ChatTemplate> t = ChatTemplate::FromModelDir(dir);
  ASSERT_TRUE(t.ok()) << t.status();
  ASSERT_TRUE(t->support().ok()) << t->support();
  const Json cases = ReadJson(dir + "/cases.json");
  ASSERT_GE(cases.size(), 30u);
  int checked = 0;
  for (const Json& c : cases) {
    SCOPED_TRACE(GetParam() + "/" + c["name"].get<std::string>());
    absl::StatusOr<std::string> out =
        t->Render(c["messages"], c["add_generation_prompt"].get<bool>(), c["kwargs"]);
    if (c.contains("expected_error")) {
      ASSERT_FALSE(out.ok());
      EXPECT_THAT(out.status(), StatusIs(absl::StatusCode::kInvalidArgument));
      EXPECT_EQ(out.status().message(),
                std::string(jinja::kRaisedPrefix) + c["expected_error"].get<std::string>());
    } else {
      ASSERT_TRUE(out.ok()) << out.status();
      EXPECT_EQ(*out, c["expected"].get<std::string>());
    }
    ++checked;
  }
  EXPECT_EQ(checked, static_cast<int>(cases.size()));
}

INSTANTIATE_TEST_SUITE_P(Families, GoldenTemplateTest,
                         ::testing::Values("qwen3", "llama3_1", "llama3_1_tools", "llama2",
                                           "gemma3", "deepseek_v3"));

TEST(ChatTemplateSnippetsTest, RenderAsJinja2) {
  const Json snippets = ReadJson(kData + "/snippets.json");
  ASSERT_GE(snippets.size(), 50u);
  for (const Json& s : snippets) {
    const std::string source = s["template"].get<std::string>();
    SCOPED_TRACE(source);
    EXPECT_EQ(MustRender(source, s["context"]), s["expected"].get<std::string>());
  }
}

// ---- Jinja2 behaviour the JavaScript reference cannot show ----
// Each expectation below was checked against Jinja2 3.1.6 configured as transformers does (the
// same templates are also in snippets.json, rendered by
// scripts/golden/check_chat_golden_jinja2.py).

TEST(ChatTemplateJinjaTest, WhitespaceControl) {
  EXPECT_EQ(MustRender("  {% if true %}x{% endif %}  \n  {%+ if true %}y{% endif %}"), "x  \n  y");
  EXPECT_EQ(MustRender("{% raw %}{{ not evaluated }}{% endraw %}"), "{{ not evaluated }}");
  EXPECT_EQ(MustRender("a\n  {%- raw -%}  {{x}}  {%- endraw -%}  \nb"), "a{{x}}b");
  EXPECT_EQ(MustRender("line\n"), "line");                        // keep_trailing_newline=False
  EXPECT_EQ(MustRender("a\r\nb"), "a\nb");                        // newlines normalised
  EXPECT_EQ(MustRender("{# c #}\nx"), "x");                       // trim_blocks after a comment
  EXPECT_EQ(MustRender("x {% if true %}\ny{% endif %}"), "x y");  // no lstrip mid-line
  EXPECT_EQ(MustRender("{{ 'a' }}\nb"), "a\nb");                  // trim_blocks leaves {{ }} alone
}

TEST(ChatTemplateJinjaTest, PythonValuesPrintAsJinja2) {
  EXPECT_EQ(MustRender("{{ 'a' ~ 1 ~ none ~ true }}"), "a1NoneTrue");
  EXPECT_EQ(MustRender("{{ ('t',) }} {{ (1, 'b') }} {{ [] }} {{ {} }}"), "('t',) (1, 'b') [] {}");
  EXPECT_EQ(MustRender("{{ \"it's\" }} {{ [\"it's\", 'q\"'] }}"), "it's [\"it's\", 'q\"']");
  EXPECT_EQ(MustRender("{{ 1e20 }} {{ 1.5e-7 }} {{ 2.0 }} {{ -0.5 }} {{ 7 / 7 }}"),
            "1e+20 1.5e-07 2.0 -0.5 1.0");
  EXPECT_EQ(
      MustRender(
          "{{ 'a' > 'b' }} {{ [1, 2] < [1, 3] }} {{ 2 ** -1 }} {{ 7.5 // 2 }} {{ -7.5 % 2 }}"),
      "False True 0.5 3.0 0.5");
}

TEST(ChatTemplateJinjaTest, TestsFiltersAndMethods) {
  EXPECT_EQ(
      MustRender(
          "{{ 9 is divisibleby 3 }} {{ 2 is in [1, 2] }} {{ 3 is eq 3 }} {{ 3 is ne 3 }} "
          "{{ 1 is sameas 1 }} {{ none is sameas none }} {{ 'x' is lower }} {{ 'X' is upper }}"),
      "True True True False True True True True");
  EXPECT_EQ(
      MustRender(
          "{{ 3.0 is integer }} {{ 3.0 is float }} {{ true is number }} {{ true is integer }} "
          "{{ undefined_thing is iterable }} {{ 'ab' is sequence }} {{ range is callable }}"),
      "False True True False True True True");
  EXPECT_EQ(MustRender("{{ s.find('l') }} {{ s.count('l') }} {{ s.find('z') }} {{ 'ünï'.upper() }} "
                       "{{ 'ÉCOLE'.lower() }}",
                       {{"s", "hello"}}),
            "2 2 -1 ÜNÏ école");
  EXPECT_EQ(
      MustRender("{{ [1, 2] | count }} {{ 'ab' | list }} {{ ['a', 'b'] | map('upper') | list }} "
                 "{{ [0, 1, 2, 3] | select('odd') | list }} {{ [0, 1, 2] | reject | list }} "
                 "{{ [0, 1, 2] | select | list }}"),
      "2 ['a', 'b'] ['A', 'B'] [1, 3] [0] [1, 2]");
  EXPECT_EQ(
      MustRender(
          "{{ 2.567 | round(2) }} {{ 2.5 | round }} {{ 3.5 | round }} {{ 2.1 | round(0, 'ceil') }} "
          "{{ 2.9 | round(method='floor') }} {{ '<a href=\"x\">' | e }}"),
      "2.57 2.0 4.0 3.0 2.0 &lt;a href=&#34;x&#34;&gt;");
  EXPECT_EQ(MustRender("{{ dict(a=1, b='x') }} {{ 'Hello {}, {name}!'.format('a', name='b') }} "
                       "{{ 'a-b'.split('-') | join('+') }} {{ ', '.join(['x', 'y']) }}"),
            "{'a': 1, 'b': 'x'} Hello a, b! a+b x, y");
  EXPECT_EQ(MustRender("{{ ['B', 'a', 'c'] | sort }} {{ ['B', 'a'] | sort(case_sensitive=true) }} "
                       "{{ [3, 1] | sort(reverse=true) }} {{ ['a', 'A', 'b'] | unique | list }} {{ "
                       "[3, 1, 2] | max }} "
                       "{{ [3, 1, 2] | min }} {{ [1, 2] | sum }} {{ 'abc' | reverse }}"),
            "['a', 'B', 'c'] ['B', 'a'] [3, 1] ['a', 'b'] 3 1 3 cba");
  EXPECT_EQ(MustRender("{{ users | map(attribute='n', default='?') | list }} {{ users | "
                       "map(attribute='a.0') | list }}",
                       {{"users", Json::parse(R"([{"n": "x", "a": [5]}, {"a": [6]}])")}}),
            "['x', '?'] [5, 6]");
  EXPECT_EQ(MustRender("{{ 'x' | tojson }} {{ v | tojson(sort_keys=true) }} {{ v | "
                       "tojson(separators=(',', ':')) }}",
                       {{"v", Json::parse(R"({"b": 1, "a": [1.0, 2]})")}}),
            R"("x" {"a": [1.0, 2], "b": 1} {"b":1,"a":[1.0,2]})");
  EXPECT_EQ(MustRender("{{ '  a  ' | trim }}|{{ 'xxaxx' | trim('x') }}|{{ 'ab' * 3 }}|{{ [1] * 2 "
                       "}}|{{ [1] + [2] }}"),
            "a|a|ababab|[1, 1]|[1, 2]");
  EXPECT_EQ(
      MustRender(
          "{{ ' a  b '.split() }} {{ 'a,b,c'.split(',', 1) }} {{ 'a b c'.split(none, 1) }} "
          "{{ 'aXbX'.rstrip('X') }} {{ 'abc'.removeprefix('a') }} {{ 'abc'.replace('', '-') }}"),
      "['a', 'b'] ['a', 'b,c'] ['a', 'b c'] aXb bc -a-b-c-");
  EXPECT_EQ(MustRender("{{ '42' | int + 1 }} {{ '0x1A' | int(0, 16) }} {{ '1A' | int(base=16) }} "
                       "{{ 'x' | int(-1) }} {{ '3.9' | int }}"),
            "43 26 26 -1 3");
  EXPECT_EQ(MustRender("{{ 'a\nb' | indent(first=true, width='> ') }} {{ 'hello world'.title() }} "
                       "{{ 'hELLO'.capitalize() }}"),
            "> a\n> b Hello World Hello");
}

TEST(ChatTemplateJinjaTest, StatementsAndScopes) {
  // Loop scoping: `set` inside a loop does not leak; namespace does.
  EXPECT_EQ(
      MustRender("{% set x = 1 %}{% for i in [1] %}{% set x = 2 %}{{ x }}{% endfor %}{{ x }}"),
      "21");
  EXPECT_EQ(MustRender("{% for a, b in [[1, 2], [3, 4]] %}{{ a + b }},{% endfor %}"), "3,7,");
  EXPECT_EQ(MustRender("{% for k in {'b': 1, 'a': 2} %}{{ k }}{% endfor %}{% for c in 'hé' %}[{{ c "
                       "}}]{% endfor %}"),
            "ba[h][é]");
  EXPECT_EQ(MustRender("{% for x in [1, 2, 3] %}{{ loop.cycle('a', 'b') }}{% endfor %}"), "aba");
  EXPECT_EQ(MustRender("{% for x in [] if x %}{{ x }}{% else %}none{% endfor %}"), "none");
  EXPECT_EQ(
      MustRender("{% for x in [1, 2] %}{% for y in [1, 2] %}{% if y == 2 %}{% break %}{% endif %}"
                 "{{ x }}{{ y }} {% endfor %}{% endfor %}"),
      "11 21 ");
  // Macros see top-level names, their defaults may use earlier parameters, and call blocks pass
  // args.
  EXPECT_EQ(MustRender("{% set top = 'T' %}{% macro m(a, b=a ~ '!') %}{{ top }}{{ a }}{{ b }}{% "
                       "endmacro %}{{ m('x') }}"),
            "Txx!");
  EXPECT_EQ(
      MustRender(
          "{% macro list(items) %}{% for i in items %}{{ caller(i) }}{% endfor %}{% endmacro %}"
          "{% call(item) list([1, 2]) %}<{{ item }}>{% endcall %}"),
      "<1><2>");
  // A stored caller outlives its call block safely.
  EXPECT_EQ(
      MustRender(
          "{% set ns = namespace() %}{% macro keep() %}{% set ns.c = caller %}{% endmacro %}"
          "{% for i in [7] %}{% call keep() %}[{{ 'x' }}]{% endcall %}{% endfor %}{{ ns.c() }}"),
      "[x]");
  EXPECT_EQ(
      MustRender(
          "{% macro f(n) %}{% if n > 0 %}{{ n }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(3) }}"),
      "321");
  EXPECT_EQ(MustRender("{% set ns = namespace(d={'a': 1}) %}{% set ns.d = ns.d.a + 1 %}{{ ns.d }}"),
            "2");
  EXPECT_EQ(MustRender("{% set messages = messages[1:] %}{{ messages | length }}",
                       {{"messages", Json::parse("[1, 2, 3]")}}),
            "2");
  EXPECT_EQ(MustRender("{{ 'a' if false }}|{{ x.y if x is defined else 'no x' }}"), "|no x");
  EXPECT_EQ(MustRender("{% filter trim | upper %}  padded  {% endfilter %}"), "PADDED");
}

TEST(ChatTemplateJinjaTest, UndefinedValues) {
  EXPECT_EQ(
      MustRender("[{{ nope }}]{{ nope | length }}{% for x in nope %}x{% endfor %}{{ 'y' if nope "
                 "else 'n' }}"
                 "{{ nope ~ 'z' }}{{ nope is none }}{{ nope == nope }}{{ nope | default('d') }}"),
      "[]0nzFalseTrued");
  EXPECT_EQ(
      MustRender("{{ d.missing is defined }} {{ d['missing'] is undefined }} {{ l[5] is defined }}",
                 {{"d", Json::object()}, {"l", Json::array()}}),
      "False True False");
  for (const char* source : {"{{ nope.attr }}", "{{ nope['k'] }}", "{{ nope() }}", "{{ nope + 1 }}",
                             "{{ d.missing.deeper }}", "{{ -nope }}", "{{ nope < 1 }}"}) {
    absl::StatusOr<std::string> out = RenderSource(source, {{"d", Json::object()}});
    ASSERT_FALSE(out.ok()) << source;
    EXPECT_THAT(out.status(), StatusIs(absl::StatusCode::kInvalidArgument)) << source;
    EXPECT_THAT(out.status().message(), HasSubstr("line 1")) << source;
  }
  absl::StatusOr<std::string> out = RenderSource("\n\n{{ nope.attr }}");
  EXPECT_THAT(out.status().message(), HasSubstr("'nope' is undefined"));
  EXPECT_THAT(out.status().message(), HasSubstr("line 3"));
}

// ---- errors ----

void ExpectStatus(const absl::StatusOr<std::string>& out, absl::StatusCode code,
                  const std::string& fragment) {
  ASSERT_FALSE(out.ok()) << "rendered: " << *out;
  EXPECT_EQ(out.status().code(), code) << out.status();
  EXPECT_THAT(std::string(out.status().message()), HasSubstr(fragment));
}

TEST(ChatTemplateErrorsTest, NotImplementedNamesTheConstruct) {
  const auto kFP = absl::StatusCode::kFailedPrecondition;
  ExpectStatus(RenderSource("{{ x | wordwrap }}"), kFP,
               "chat template uses filter \"wordwrap\", which loramux does not implement");
  ExpectStatus(RenderSource("{% if x is escaped %}{% endif %}"), kFP, "test \"escaped\"");
  ExpectStatus(RenderSource("{% include 'other.jinja' %}"), kFP, "the {% include %} statement");
  ExpectStatus(RenderSource("{% for x in y recursive %}{% endfor %}"), kFP, "recursive for loops");
  ExpectStatus(RenderSource("{{ 'a'.zfill(3) }}"), kFP, "the str method \"zfill\"");
  ExpectStatus(RenderSource("{{ 'a'.rsplit('a') }}"), kFP, "the str method \"rsplit\"");
  ExpectStatus(RenderSource("{{ [1].append(2) }}"), kFP,
               "list.append(), which transformers' sandbox forbids");
  ExpectStatus(RenderSource("{{ cycler('a') }}"), kFP, "the global function \"cycler\"");
  ExpectStatus(RenderSource("{{ '%s' % 'x' }}"), kFP, "printf-style string formatting");
  ExpectStatus(RenderSource("{% macro m() %}{{ varargs }}{% endmacro %}"), kFP, "varargs/kwargs");
  ExpectStatus(RenderSource("{% for x in [1] %}{{ loop.changed(x) }}{% endfor %}"), kFP,
               "loop.changed()");
  ExpectStatus(RenderSource("{{ x | map('wordcount') | list }}", {{"x", Json::array({"a"})}}), kFP,
               "filter \"wordcount\"");
  // A filter used only in a branch never taken still fails: never a silently different prompt.
  ExpectStatus(RenderSource("{% if false %}{{ x | wordwrap }}{% endif %}ok"), kFP, "wordwrap");
  // The template still loads (so the server can serve plain text) and says what is missing.
  absl::StatusOr<ChatTemplate> t = ChatTemplate::FromSource("{{ x | center }}", {});
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->support().code(), kFP);
}

TEST(ChatTemplateErrorsTest, RaiseExceptionCarriesTheMessage) {
  ExpectStatus(RenderSource("{{ raise_exception('Roles must alternate: ' ~ 3) }}"),
               absl::StatusCode::kInvalidArgument,
               "chat template rejected the conversation: Roles must alternate: 3");
}

TEST(ChatTemplateErrorsTest, SyntaxErrorsSayWhere) {
  const auto kIA = absl::StatusCode::kInvalidArgument;
  ExpectStatus(RenderSource("a\n{% if x %}never closed"), kIA, "missing {% endif %}");
  ExpectStatus(RenderSource("{{ 1 + }}"), kIA, "line 1");
  ExpectStatus(RenderSource("\n{{ 'unterminated }}"), kIA, "unterminated string");
  ExpectStatus(RenderSource("{% frobnicate %}"), kIA, "unknown statement {% frobnicate %}");
  ExpectStatus(RenderSource("{% break %}"), kIA, "outside a for loop");
  ExpectStatus(RenderSource("{{ x "), kIA, "unterminated {{ ... }}");
  ExpectStatus(RenderSource("{# open"), kIA, "unterminated comment");
  ExpectStatus(RenderSource("{{ 1 / 0 }}"), kIA, "division by zero");
  ExpectStatus(RenderSource("{{ 'a' + 1 }}"), kIA,
               "unsupported operand type(s) for +: 'str' and 'int'");
  ExpectStatus(RenderSource("{% set x = 1 %}{% set x.a = 2 %}"), kIA,
               "only namespace() objects take attributes");
  ExpectStatus(RenderSource("{% for a, b in [1] %}{% endfor %}"), kIA, "cannot unpack");
  ExpectStatus(RenderSource("{{ 9223372036854775807 + 1 }}"), kIA, "integer overflow");
  EXPECT_EQ(ChatTemplate::FromSource("\xff\xfe", {}).status().code(), kIA);
  // Escapes of surrogates (lone or paired, as Python keeps them) would render invalid UTF-8.
  ExpectStatus(RenderSource("{{ \"es \\udddd\" }}"), kIA, "surrogate (U+DDDD)");
  ExpectStatus(RenderSource("\n{{ '\\ud83d\\ude00' }}"), kIA, "line 2: escape of a surrogate");
  ExpectStatus(RenderSource("{{ '\\U0000d800' }}"), kIA, "surrogate (U+D800)");
  EXPECT_EQ(MustRender("{{ '\\u00e9\\U0001F600\\ud7ff\\ue000' }}"), "\u00e9\U0001F600\ud7ff\ue000");
}

TEST(ChatTemplateErrorsTest, LimitsBoundHostileTemplates) {
  const auto kRE = absl::StatusCode::kResourceExhausted;
  jinja::RenderLimits small;
  small.max_steps = 10'000;
  small.max_output_bytes = 1 << 16;
  ExpectStatus(
      RenderSource("{% for i in range(1000) %}{% for j in range(1000) %}{% endfor %}{% endfor %}",
                   {}, small),
      kRE, "steps");
  ExpectStatus(RenderSource("{% for i in range(1000) %}{{ 'x' * 1000 }}{% endfor %}", {}, small),
               kRE, "larger than");
  ExpectStatus(RenderSource("{{ 'x' * 100000000000 }}", {}, small), kRE, "larger than");
  ExpectStatus(
      RenderSource(
          "{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}"
          "{% endfor %}",
          {}, small),
      kRE, "larger than");
  ExpectStatus(RenderSource("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", {}, small), kRE,
               "nest deeper");
  // Many large values kept at once: bounded by what one render may build in total.
  jinja::RenderLimits budget;
  budget.max_built_bytes = 64u << 20;
  ExpectStatus(RenderSource("{% set ns = namespace() %}{% for i in range(100) %}{% set ns.a = "
                            "[ns.a, [0] * 1000000] %}"
                            "{% endfor %}",
                            {}, budget),
               kRE, "bytes of strings and lists in one render");
  ExpectStatus(RenderSource("{{ range(1000000000) | length }}"), kRE, "range()");
  ExpectStatus(RenderSource("{{ " + std::string(5000, '(') + "1" + std::string(5000, ')') + " }}"),
               absl::StatusCode::kInvalidArgument, "nests deeper");
}

TEST(ChatTemplateErrorsTest, DeepValuesAreRefused) {
  const std::string nest =
      "{% set ns = namespace(x=1) %}{% for i in range(5000) %}{% set ns.x = [ns.x] %}{% endfor %}";
  ExpectStatus(RenderSource(nest + "{{ ns.x }}"), absl::StatusCode::kInvalidArgument,
               "nests deeper");
  ExpectStatus(RenderSource(nest + "{{ ns.x == ns.x }}"), absl::StatusCode::kInvalidArgument,
               "nests deeper");
  ExpectStatus(RenderSource(nest + "{{ ns.x | tojson }}"), absl::StatusCode::kInvalidArgument,
               "nests too deeply");
}

// A namespace given itself, directly or through a list, a dict or another namespace (a loop's
// too), renders; printing the cycle is refused as too deep. Each render frees it all: under
// LeakSanitizer (scripts/test_sanitized.sh) a leaked cycle fails this test at exit. (Found by the
// chat_template fuzzer: `{% set ns.system_prompt = ns %}` in a real template leaked per render.)
TEST(ChatTemplateErrorsTest, NamespaceCyclesRenderAndAreFreed) {
  const std::string cycles =
      "{% set ns = namespace(a=1) %}{% set ns.self = ns %}{% set other = namespace(back=ns) %}"
      "{% set ns.l = [other, {'k': ns}] %}{% for i in [1, 2] %}{% set loop.me = loop %}"
      "{% endfor %}";
  for (int render = 0; render < 3; ++render) {
    EXPECT_EQ(MustRender(cycles + "{{ ns.self.self.a }}{{ ns.l[0].back.a }}{{ ns.l[1].k.a }}"),
              "111");
  }
  ExpectStatus(RenderSource(cycles + "{{ ns }}"), absl::StatusCode::kInvalidArgument,
               "nests deeper");
}

TEST(ChatTemplateErrorsTest, DeepInputIsRefused) {
  Json deep = Json::array();
  for (int i = 0; i < 1000; ++i) deep = Json::array({deep});
  ExpectStatus(RenderSource("{{ x | length }}", {{"x", deep}}), absl::StatusCode::kInvalidArgument,
               "nests deeper");
}

// ---- loading ----

TEST(ChatTemplateLoadTest, TokenizerConfigShapes) {
  absl::StatusOr<ChatTemplate> t = ChatTemplate::FromTokenizerConfig(R"({
    "chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "{{ bos_token }}|{{ eos_token }}|{{ unk_token is defined }}|{{ pad_token }}"}],
    "bos_token": {"__type": "AddedToken", "content": "<s>", "lstrip": false},
    "eos_token": "</s>", "unk_token": null, "pad_token": "<pad>"})");
  ASSERT_TRUE(t.ok()) << t.status();
  absl::StatusOr<std::string> out = t->Render(Json::array(), false, nullptr);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out, "<s>|</s>|False|<pad>");
  // Request extras override the special tokens, as in transformers.
  EXPECT_EQ(*t->RenderJson("[]", false, R"({"eos_token": "E"})"), "<s>|E|False|<pad>");

  EXPECT_THAT(ChatTemplate::FromTokenizerConfig(R"({"bos_token": "<s>"})").status(),
              StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(
      ChatTemplate::FromTokenizerConfig(R"({"chat_template": [{"name": "rag", "template": "x"}]})")
          .status(),
      StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(ChatTemplate::FromTokenizerConfig("{not json").status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ChatTemplate::FromTokenizerConfig(R"({"chat_template": 3})").status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(
      ChatTemplate::FromTokenizerConfig(R"({"chat_template": "x", "bos_token": 5})").status(),
      StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ChatTemplate::FromModelDir(kData + "/no-such-model").status(),
              StatusIs(absl::StatusCode::kNotFound));

  absl::StatusOr<ChatTemplate> plain = ChatTemplate::FromSource("{{ messages | length }}", {});
  ASSERT_TRUE(plain.ok());
  EXPECT_THAT(plain->RenderJson("{", false, "").status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(plain->RenderJson("{}", false, "").status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(plain->RenderJson("[]", false, "[1]").status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(*plain->RenderJson(R"([{"role": "user"}])", false, ""), "1");
}

TEST(ChatTemplateLoadTest, StrftimeNowFormatsTheClock) {
  absl::StatusOr<std::string> out =
      RenderSource("{{ strftime_now('%Y') | length }} {{ strftime_now('%d %b %Y') | length }}");
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out, "4 11");
}

TEST(ChatTemplateLoadTest, ConcurrentRendersAgree) {
  const std::string dir = kData + "/qwen3";
  absl::StatusOr<ChatTemplate> t = ChatTemplate::FromModelDir(dir);
  ASSERT_TRUE(t.ok());
  const Json cases = ReadJson(dir + "/cases.json");
  std::vector<std::thread> threads;
  std::vector<int> mismatches(4, 0);
  for (int k = 0; k < 4; ++k) {
    threads.emplace_back([&, k] {
      for (int round = 0; round < 5; ++round) {
        for (const Json& c : cases) {
          absl::StatusOr<std::string> out =
              t->Render(c["messages"], c["add_generation_prompt"].get<bool>(), c["kwargs"]);
          if (!out.ok() || *out != c["expected"].get<std::string>()) ++mismatches[k];
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int k = 0; k < 4; ++k) EXPECT_EQ(mismatches[k], 0) << "thread " << k;
}

}  // namespace
}  // namespace loramux
