"""Writes the MMLU task and group YAMLs (run once; the files are committed).

One task per subject (cais/mmlu config), one group per lm-evaluation-harness category, and the
`mmlu` group over the four categories, every score weighted by subject size (micro-average), as
lm-evaluation-harness 0.4.x's lm_eval/tasks/mmlu/default (subjects, categories and descriptions
checked against lm-eval 0.4.13).
"""

from pathlib import Path

CATEGORIES = {
    "stem": [
        "abstract_algebra", "anatomy", "astronomy", "college_biology", "college_chemistry",
        "college_computer_science", "college_mathematics", "college_physics", "computer_security",
        "conceptual_physics", "electrical_engineering", "elementary_mathematics", "high_school_biology",
        "high_school_chemistry", "high_school_computer_science", "high_school_mathematics",
        "high_school_physics", "high_school_statistics", "machine_learning",
    ],
    "other": [
        "business_ethics", "clinical_knowledge", "college_medicine", "global_facts", "human_aging",
        "management", "marketing", "medical_genetics", "miscellaneous", "nutrition",
        "professional_accounting", "professional_medicine", "virology",
    ],
    "social_sciences": [
        "econometrics", "high_school_geography", "high_school_government_and_politics",
        "high_school_macroeconomics", "high_school_microeconomics", "high_school_psychology",
        "human_sexuality", "professional_psychology", "public_relations", "security_studies",
        "sociology", "us_foreign_policy",
    ],
    "humanities": [
        "formal_logic", "high_school_european_history", "high_school_us_history",
        "high_school_world_history", "international_law", "jurisprudence", "logical_fallacies",
        "moral_disputes", "moral_scenarios", "philosophy", "prehistory", "professional_law",
        "world_religions",
    ],
}
# The subjects are clusters of the group's mean: its stderr is the cluster-robust one over them (lm-eval's pooled
# stderr, which takes every question as independent, is in results.json standard_errors as naive_stderr).
AGGREGATE = (
    "aggregate_metric_list:\n  - metric: acc\n    weight_by_size: true\n"
    "    # each subject a cluster: the stderr allows for questions of one subject being alike\n"
    "    cluster_key: subtask\nmetadata:\n  version: 1.0\n"
)


def main(folder: Path = Path(__file__).parent) -> None:
    for category, subjects in CATEGORIES.items():
        for subject in subjects:
            words = subject.replace("_", " ")
            (folder / f"mmlu_{subject}.yaml").write_text(
                f"# MMLU, {words} (category {category}): lm-evaluation-harness's mmlu_{subject}\n"
                "# (lm_eval/tasks/mmlu/default); prompt and scoring in _default_template_yaml.\n"
                "include: _default_template_yaml\n"
                f"task: mmlu_{subject}\n"
                f"dataset_name: {subject}\n"
                f'description: "The following are multiple choice questions (with answers) about {words}.\\n\\n"\n'
            )
        tasks = "".join(f"  - mmlu_{subject}\n" for subject in subjects)
        (folder / f"mmlu_{category}.yaml").write_text(
            f"# MMLU {category.replace('_', ' ')}: {len(subjects)} subjects, as lm-evaluation-harness's mmlu_{category} group\n"
            f"# (lm_eval/tasks/mmlu/default/_mmlu_{category}.yaml): acc weighted by subject size.\n"
            f"group: mmlu_{category}\ntask:\n{tasks}{AGGREGATE}"
        )
    groups = "".join(f"  - mmlu_{category}\n" for category in CATEGORIES)
    (folder / "mmlu.yaml").write_text(
        "# MMLU (Hendrycks et al., 2021): 14,042 test questions over 57 subjects in 4 categories, as\n"
        "# lm-evaluation-harness's mmlu group (lm_eval/tasks/mmlu/default/_mmlu.yaml): acc weighted by size.\n"
        "# Zero-shot; for the usual 5-shot score: --data.init_args.num_fewshot 5 (the first 5 dev questions).\n"
        f"group: mmlu\ntask:\n{groups}{AGGREGATE}"
    )


if __name__ == "__main__":
    main()
