"""Unit tests of generate.py and check.py's parsing (make test-monitoring; standard library).

The live behaviour is checked by `make check-observability`; these pin the pieces that
decide what it checks: the rules taken out of the PrometheusRule, the dashboard
validation, the vmui conversion and the metric names read from PromQL.
"""

import json
import sys
import tempfile
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import check  # noqa: E402
import generate  # noqa: E402


def grafana(panels, variables=("datasource",)):
    return {
        "title": "T",
        "templating": {"list": [{"name": v, "type": "datasource"} for v in variables]},
        "panels": panels,
    }


def panel(title, expr, uid="${datasource}", w=8, y=1, x=0, legend=""):
    return {
        "type": "timeseries",
        "title": title,
        "datasource": {"type": "prometheus", "uid": uid},
        "gridPos": {"h": 8, "w": w, "x": x, "y": y},
        "targets": [{"expr": expr, "legendFormat": legend, "refId": "A"}],
    }


class Rules(unittest.TestCase):
    def test_the_spec_becomes_a_rules_file(self):
        text = generate.rules_text()
        self.assertIn("\ngroups:\n", text)
        self.assertNotIn("apiVersion", text)
        self.assertNotIn("PrometheusRule", text)
        names = [name for name, _ in generate.alert_exprs()]
        self.assertEqual(len(names), len(set(names)))
        self.assertIn("KafkaBrokerDown", names)
        self.assertIn("PipelineFrontierDelayHigh", names)

    def test_folded_expressions_are_read_whole(self):
        exprs = dict(generate.alert_exprs())
        self.assertIn(" and ", exprs["ConsumerGroupLagGrowing"])
        self.assertTrue(exprs["DeadLetterRecords"].endswith("> 0"))

    def test_a_key_after_spec_is_refused(self):
        with tempfile.TemporaryDirectory() as d:
            bad = Path(d) / "alerts.yaml"
            bad.write_text("kind: PrometheusRule\nspec:\n  groups: []\nmetadata:\n  name: x\n")
            with self.assertRaises(generate.GenerateError):
                generate.rules_text(bad)
            bad.write_text("kind: PrometheusRule\nmetadata:\n  name: x\n")
            with self.assertRaises(generate.GenerateError):
                generate.rules_text(bad)


class PrometheusRuleSchema(unittest.TestCase):
    """alerts.yaml against the PrometheusRule v1 JSON Schema (prometheus-operator's CRD,
    strict), which CI finds at ../shared/k8s-schemas beside the clone."""

    def test_alerts_is_a_valid_prometheusrule(self):
        schema_path = generate.HERE.parent.parent.parent / "shared/k8s-schemas/monitoring.coreos.com/prometheusrule_v1.json"
        if not schema_path.exists():
            self.skipTest(f"no PrometheusRule schema at {schema_path} (CI lays ../shared beside the clone)")
        try:
            import jsonschema
            import yaml
        except ImportError as e:
            self.skipTest(f"PyYAML and jsonschema are needed for the schema check: {e}")
        document = yaml.safe_load(generate.ALERTS.read_text())
        schema = json.loads(schema_path.read_text())
        # The schema's own regexes are Go's (RE2), which Python's `re` cannot all compile,
        # so the schema itself is not checked, only the document against it.
        validator = jsonschema.validators.validator_for(schema)(schema)
        validator.validate(document)
        broken = json.loads(json.dumps(document))
        broken["spec"]["groups"][0]["rules"][0]["forr"] = "1m"
        with self.assertRaises(jsonschema.ValidationError):
            validator.validate(broken)


class Dashboards(unittest.TestCase):
    def test_every_dashboard_converts(self):
        dashboards = list(generate.dashboards())
        self.assertGreaterEqual(len(dashboards), 4)
        for path, d in dashboards:
            vmui = generate.vmui_dashboard(path, d)
            panels = [p for row in vmui["rows"] for p in row["panels"]]
            self.assertTrue(panels, path)
            for p in panels:
                self.assertTrue(1 <= p["width"] <= 12)
                self.assertTrue(p["expr"])

    def test_rows_widths_and_legends(self):
        d = grafana([
            {"type": "row", "title": "R1", "gridPos": {"y": 0, "x": 0, "w": 24, "h": 1}},
            panel("a", "up", w=8, y=1, legend="nodes"),
            panel("b", "sum by (job) (up)", w=24, y=1, x=8, legend="{{job}}"),
            {"type": "row", "title": "R2", "gridPos": {"y": 9, "x": 0, "w": 24, "h": 1}},
            panel("c", "rate(x_total[$__rate_interval])", w=12, y=10),
        ])
        vmui = generate.vmui_dashboard(Path("t.json"), d)
        self.assertEqual([r["title"] for r in vmui["rows"]], ["R1", "R2"])
        a, b = vmui["rows"][0]["panels"]
        self.assertEqual((a["width"], a["alias"]), (4, ["nodes"]))
        self.assertEqual(b["width"], 12)
        self.assertNotIn("alias", b)  # templated legends stay labels
        self.assertEqual(vmui["rows"][1]["panels"][0]["expr"], ["rate(x_total[1m])"])

    def test_a_fixed_datasource_is_refused(self):
        d = grafana([panel("a", "up", uid="prometheus")])
        with self.assertRaises(generate.GenerateError):
            generate.vmui_dashboard(Path("t.json"), d)

    def test_no_datasource_variable_is_refused(self):
        d = grafana([panel("a", "up")], variables=())
        with self.assertRaises(generate.GenerateError):
            generate.vmui_dashboard(Path("t.json"), d)

    def test_an_unknown_variable_is_refused(self):
        d = grafana([panel("a", 'up{job="$job"}')])
        with self.assertRaises(generate.GenerateError):
            generate.vmui_dashboard(Path("t.json"), d)

    def test_files_are_grafana_json(self):
        for path, d in generate.dashboards():
            self.assertIn("uid", d, path)
            json.dumps(d)


class MetricNames(unittest.TestCase):
    def test_names_without_functions_labels_or_durations(self):
        cases = {
            'sum by (node) (rate(kafka_x_total{topic!=""}[1m]))': {"kafka_x_total"},
            "histogram_quantile(0.99, sum by (le, route) (rate(h_bucket[5m])))": {"h_bucket"},
            "(sum(a) or vector(0)) != 1": {"a"},
            "b unless b offset 5m": {"b"},
            "time() - max(c > 0) / 1000": {"c"},
            "x and on (job) group_left (instance) y": {"x", "y"},
            'count({__name__="z"})': set(),
            "1e3 * d:rate5m": {"d:rate5m"},
        }
        for expr, names in cases.items():
            self.assertEqual(check.metric_names(expr), names, expr)

    def test_every_definition_names_a_metric(self):
        for where, expr in check.definitions():
            self.assertTrue(check.metric_names(expr), f"{where}: {expr}")

    def test_declared_in_finds_registered_names_only(self):
        self.assertIsNotNone(check.declared_in("eventbus_dead_lettered_total"))
        self.assertIsNotNone(check.declared_in("pipeline_sink_commit_seconds_bucket"))
        self.assertIsNone(check.declared_in(check.MADE_UP_METRIC))

    def test_an_order_needs_all_three_services_on_one_trace(self):
        a, b, c = check.ORDER_SERVICES
        good = [{"service": a, "trace_id": "t1"}, {"service": b, "trace_id": "t1"},
                {"service": c, "trace_id": "t1"}, {"service": c}]
        self.assertEqual(check.order_problems(good), [])
        self.assertIn(c, check.order_problems(good[:2])[0])  # the pipeline logged nothing
        split = [{"service": a, "trace_id": "t1"}, {"service": b, "trace_id": "t2"},
                 {"service": c, "trace_id": "t1"}]
        self.assertIn("no trace id", check.order_problems(split)[0])  # payment started a new trace
        untraced = [{"service": s} for s in check.ORDER_SERVICES]
        self.assertIn("no trace id", check.order_problems(untraced)[0])

    def test_order_query_names_the_order_and_its_traces(self):
        q = check.order_query("o-1", None, ["t-1"])
        self.assertIn('order_id:="o-1"', q)
        self.assertIn('trace_id:="t-1"', q)
        self.assertTrue(q.endswith("| sort by (_time)"))


if __name__ == "__main__":
    unittest.main()
