"""The bias report's JSON Schema (version 1) and its check; the fields are described in core.report.build."""
from __future__ import annotations

SCHEMA_VERSION = 1

FLAGS_DEFINITION = (
    "A flag listed under class X is a word over-represented in the explanations of X's images that the "
    "classifier gets wrong, compared with X's images it gets right, and not part of any class's concept (X's, "
    "the class they are misread as, shown as 'pulls toward', or another). It is what pulls X's images toward "
    "another class: typically the background or context the classifier learned to read as the other class. "
    "Score = log-odds z-score (misread vs. read correctly); a flag needs enough misread images that use the word "
    "(fewer when few are misread), and a visual meaning.")


def flags_definition(class_names: list[str] | None = None) -> str:
    """FLAGS_DEFINITION, with an example in the run's own classes when it has two or more (never another
    dataset's)."""
    names = [str(c) for c in (class_names or []) if str(c)]
    if len(names) < 2:
        return FLAGS_DEFINITION
    return (FLAGS_DEFINITION + f" For example, a word flagged under {names[0]} is used more when the classifier "
            f"misreads {names[0]} images (as {names[1]}, say) than when it reads them right.")


ASSOCIATION_DEFINITION = (
    "The association view lists, under class X, words over-represented in the explanations of images predicted "
    "as X compared with the other images, that describe no class's object: what the classifier ties to X even "
    "where it has not yet cost accuracy. Where the dataset has true groups, a flag is confirmed when its share "
    "differs between two groups of the same class (it follows the attribute, not the class); confirmed flags "
    "rank first.")

_NUM = {"type": ["number", "null"]}
_INT = {"type": ["integer", "null"]}
_STR = {"type": ["string", "null"]}
_GROUP_ROW = {"type": "object", "required": ["group", "group_name", "n", "accuracy", "ci_low", "ci_high"],
              "properties": {"group": {"type": "integer"}, "group_name": {"type": "string"},
                             "n": {"type": "integer"}, "correct": {"type": "integer"}, "accuracy": _NUM,
                             "ci_low": _NUM, "ci_high": _NUM}}
_RATE = {"type": "object", "required": ["rate", "ci95"],
         "properties": {"rate": _NUM, "ci95": {"type": "array", "items": _NUM}, "images": _INT}}
# A flag's causal test (core.evaluation.causal, stored with the run; core.report.evidence picks the one per flag).
_CAUSAL = {"type": "object", "required": ["verdict", "images", "settings"],
           "properties": {"verdict": {"type": "string"}, "images": {"type": "integer"},
                          "prediction_changed": _RATE, "control_prediction_changed": _RATE,
                          "right_after": _RATE, "control_right_after": _RATE, "difference": {"type": "object"},
                          "ratio_to_control": _NUM, "word_share_change": {"type": "object"},
                          "mean_share_before": _NUM, "mean_share_after": _NUM, "mean_share_control": _NUM,
                          "settings": {"type": "object", "properties": {
                              "share": _NUM, "fill": _STR, "seed": _INT, "max_images": _INT, "predicted": _STR,
                              "region": _STR, "map_method": _STR}}}}
_FLAG_ROW = {"type": "object",
             "required": ["rank", "word", "predicted_as", "score", "share_wrong", "share_right", "n_wrong", "n_right",
                          "z", "evidence", "example_image_ids", "source"],
             "properties": {"rank": {"type": "integer"}, "word": {"type": "string"}, "predicted_as": _STR,
                            "score": _NUM, "share_wrong": _NUM, "share_right": _NUM, "n_wrong": _INT,
                            "n_right": _INT, "images_wrong": _INT, "z": _NUM, "z_toward": _NUM,
                            "evidence": {"type": "string"},
                            "example_image_ids": {"type": "array", "items": {"type": "string"}},
                            "source": {"enum": ["statistics", "user"]}, "causal": _CAUSAL}}
_FLAGS_BY_CLASS = {"type": "object", "additionalProperties": {"type": "array", "items": _FLAG_ROW}}
_ASSOCIATION_ROW = {"type": "object",
                    "required": ["rank", "word", "score", "share_class", "share_other", "images_class", "z",
                                 "images_misread", "n_misread", "group_gap", "confirmed", "evidence"],
                    "properties": {"rank": {"type": "integer"}, "word": {"type": "string"}, "score": _NUM,
                                   "share_class": _NUM, "share_other": _NUM, "n_class": _INT, "n_other": _INT,
                                   "images_class": _INT, "z": _NUM, "images_misread": _INT, "n_misread": _INT,
                                   "group_gap": _NUM, "group_high": _STR, "group_low": _STR,
                                   "share_group_high": _NUM, "share_group_low": _NUM,
                                   "confirmed": {"type": ["boolean", "null"]}, "evidence": {"type": "string"},
                                   "example_image_ids": {"type": "array", "items": {"type": "string"}},
                                   "source": {"enum": ["statistics", "user"]}, "causal": _CAUSAL}}
_ASSOCIATION = {"type": "object", "required": ["definition", "by", "by_class"],
                "properties": {"definition": {"type": "string"}, "by": {"enum": ["prediction", "label"]},
                               "by_class": {"type": "object", "additionalProperties": {
                                   "type": "array", "items": _ASSOCIATION_ROW}}}}
_NOTE_ROW = {"type": "object", "required": ["class", "view", "n_flags", "reason"],
             "properties": {"class": {"type": "string"}, "view": {"enum": ["error", "association"]},
                            "n_flags": {"type": "integer"}, "reason": _STR}}
_ACCURACY = {"type": "object", "required": ["overall", "n_images", "per_class"],
             "properties": {"overall": _NUM, "n_images": {"type": "integer"},
                            "per_class": {"type": "array", "items": {
                                "type": "object", "required": ["class", "n", "accuracy"],
                                "properties": {"class": {"type": "string"}, "n": {"type": "integer"},
                                               "correct": {"type": "integer"}, "accuracy": _NUM,
                                               "ci_low": _NUM, "ci_high": _NUM}}}}}
_GROUPS = {"type": ["object", "null"],
           "required": ["source", "per_group", "worst", "worst_group", "worst_group_name", "average_unweighted",
                        "average_test_weighted", "average_train_weighted"],
           "properties": {"source": {"enum": ["true", "inferred"]},
                          "per_group": {"type": "array", "items": _GROUP_ROW}, "worst": _NUM,
                          "worst_group": {"type": "integer"}, "worst_group_name": {"type": "string"},
                          "average_unweighted": _NUM, "average_test_weighted": _NUM,
                          "average_train_weighted": _NUM}}
_WORD_ROW = {"type": "object", "required": ["word", "share"],
             "properties": {"word": {"type": "string"}, "share": _NUM, "ci_low": _NUM, "ci_high": _NUM,
                            "images_with_word": {"type": "integer"}, "n_images": {"type": "integer"}}}
_MITIGATION_ROW = {"type": "object", "required": ["method"],
                   "properties": {"method": {"type": "string"}, "groups": _STR, "worst_group_before": _NUM,
                                  "worst_group_after": _NUM, "average_before": _NUM, "average_after": _NUM}}
_PROVENANCE = {"type": "object", "required": ["models", "dataset", "settings", "seed", "versions"],
               "properties": {"models": {"type": "object"}, "dataset": {"type": "object"},
                              "settings": {"type": "object"}, "seed": {"type": ["integer", "null"]},
                              "versions": {"type": "object"}, "sentences": {"type": "string"}}}

_SLICE_ROW = {"type": "object", "required": ["name", "words", "match", "n", "accuracy", "ci_low", "ci_high",
                                            "confusion", "example_image_ids"],
              "properties": {"name": {"type": "string"}, "words": {"type": "array", "items": {"type": "string"}},
                             "match": {"enum": ["any", "all"]}, "min_share": _NUM, "n": {"type": "integer"},
                             "n_total": _INT, "correct": _INT, "accuracy": _NUM, "ci_low": _NUM, "ci_high": _NUM,
                             "accuracy_rest": _NUM,
                             "confusion": {"type": "array", "items": {
                                 "type": "object", "required": ["class", "predicted_as", "images"]}},
                             "per_class": {"type": "array", "items": {"type": "object"}},
                             "example_image_ids": {"type": "array", "items": {"type": "string"}}}}

REPORT_SCHEMA: dict = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "texplain-studio/report/v1",
    "title": "TExplain Studio bias report",
    "type": "object",
    "required": ["schema_version", "generated_at", "generator", "run", "provenance", "accuracy", "groups",
                 "inferred_groups", "flags", "top_words", "mitigation", "comparison", "notes"],
    "properties": {
        "schema_version": {"const": SCHEMA_VERSION},
        "generated_at": {"type": "string"},
        "generator": {"type": "string"},
        "run": {"type": "object", "required": ["name", "path", "status", "n_images", "evaluation_split",
                                               "n_evaluated"],
                "properties": {"name": {"type": "string"}, "path": {"type": "string"}, "status": _STR,
                               "created": _STR, "n_images": {"type": "integer"}, "evaluation_split": _STR,
                               "n_evaluated": {"type": "integer"}, "n_unreadable": {"type": "integer"}}},
        "provenance": _PROVENANCE,
        "accuracy": _ACCURACY,
        "groups": _GROUPS,
        "inferred_groups": {"type": ["object", "null"], "required": ["words", "thresholds", "per_group", "agreement"],
                            "properties": {"words": {"type": "object", "additionalProperties": {
                                "type": "array", "items": {"type": "string"}}},
                                "thresholds": {"type": "object", "additionalProperties": _NUM},
                                "per_group": {"type": "array", "items": _GROUP_ROW},
                                "worst": _NUM, "worst_group_name": _STR,
                                "agreement": {"type": ["object", "null"],
                                              "required": ["accuracy", "adjusted_rand", "n"],
                                              "properties": {"accuracy": _NUM, "adjusted_rand": _NUM,
                                                             "n": {"type": "integer"}}}}},
        "flags": {"type": "object", "required": ["definition", "scorer", "by_class", "misread", "association",
                                                 "notes"],
                  "properties": {"definition": {"type": "string"}, "scorer": {"type": "object"},
                                 "counts": {"type": "object", "additionalProperties": {
                                     "type": "object", "properties": {"error": {"type": "integer"},
                                                                      "association": {"type": "integer"}}}},
                                 "kept_per_class": _INT,
                                 "by_class": _FLAGS_BY_CLASS,
                                 "misread": {"type": "array", "items": {"type": "object"}},
                                 "association": _ASSOCIATION,
                                 "notes": {"type": "array", "items": _NOTE_ROW}}},
        "top_words": {"type": "object", "required": ["by_class"],
                      "properties": {"by_class": {"type": "object", "additionalProperties": {
                          "type": "array", "items": _WORD_ROW}}}},
        "mitigation": {"type": ["array", "null"], "items": _MITIGATION_ROW},
        "evaluation": {"type": ["object", "null"]},
        "comparison": {"type": ["object", "null"],
                       "required": ["run", "provenance", "accuracy", "groups", "flags", "divergence", "changed_words"],
                       "properties": {"run": {"type": "object"}, "provenance": _PROVENANCE, "accuracy": _ACCURACY,
                                      "groups": _GROUPS,
                                      "flags": {"type": "object", "properties": {
                                          "by_class": _FLAGS_BY_CLASS, "association": _ASSOCIATION,
                                          "notes": {"type": "array", "items": _NOTE_ROW}}},
                                      "by": {"enum": ["label", "prediction"]},
                                      "same_explanations": {"type": "boolean"},
                                      "divergence": {"type": "array", "items": {
                                          "type": "object", "required": ["class", "jensen_shannon"],
                                          "properties": {"class": {"type": "string"}, "jensen_shannon": _NUM}}},
                                      "changed_words": {"type": "object", "additionalProperties": {
                                          "type": "array",
                                          "items": {"type": "object", "required": ["word", "change"]}}}}},
        "backgrounds": {"type": ["object", "null"], "required": ["variations", "bg_gap", "reading", "error_words"],
                        "properties": {"variations": {"type": "array", "items": {
                            "type": "object", "required": ["variation", "images", "accuracy"]}},
                            "bg_gap": {"type": ["object", "null"]}, "reading": _STR,
                            "error_words": {"type": "array", "items": {"type": "object", "required": ["word"]}},
                            "by_class": {"type": "array", "items": {
                                "type": "object", "required": ["variation", "class", "images", "accuracy"]}},
                            "worst_cell": {"type": ["object", "null"]}}},
        "slices": {"type": ["array", "null"], "items": _SLICE_ROW},
        "verdict": {"type": ["object", "null"], "required": ["passed", "rules"],
                    "properties": {"passed": {"type": "boolean"}, "rules": {"type": "array", "items": {
                        "type": "object", "required": ["rule", "passed", "evidence"],
                        "properties": {"rule": {"type": "string"}, "passed": {"type": "boolean"},
                                       "threshold": {}, "value": {}, "evidence": {"type": "string"}}}}}},
        "word_map_reliability": {"type": ["object", "null"], "properties": {
            "scene": {"type": "object"}, "object": {"type": "object"}, "text": _STR}},
        "notes": {"type": "array", "items": {"type": "string"}},
    },
}


def validate_report(report: dict) -> None:
    """Raise ValueError when `report` does not follow REPORT_SCHEMA (jsonschema when installed, else a
    check of the top-level fields and their types)."""
    try:
        import jsonschema
    except ImportError:
        jsonschema = None
    if jsonschema is not None:
        try:
            jsonschema.validate(report, REPORT_SCHEMA)
        except jsonschema.ValidationError as exc:
            where = "/".join(str(p) for p in exc.absolute_path) or "(top level)"
            raise ValueError(f"report does not follow REPORT_SCHEMA at {where}: {exc.message}") from exc
        return
    if not isinstance(report, dict):
        raise ValueError(f"report must be a dict, got {type(report).__name__}")
    missing = [k for k in REPORT_SCHEMA["required"] if k not in report]
    if missing:
        raise ValueError(f"report is missing fields {missing}")
    if report["schema_version"] != SCHEMA_VERSION:
        raise ValueError(f"report schema_version is {report['schema_version']!r}; expected {SCHEMA_VERSION}")
