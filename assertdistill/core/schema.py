"""Every output file name, summary key, metric key and per-record key the suite writes or reads, defined once.

The values are the thesis's spellings (its graph scripts and users' files depend on them): change a
name here and every writer and reader changes with it; never change a value.
"""

from __future__ import annotations

# ---- Files and directories a run writes into --output_dir ----
SUMMARY_FILENAME = "distillation_summary.json"  # the thesis's summary: one per finished run
METRICS_FILENAME = "metrics.jsonl"  # the per-epoch log, one HISTORY entry per line
PREDICTIONS_FILENAME = "predictions.jsonl"  # one ROW per evaluated record of the last evaluation
FINAL_MODEL_DIRNAME = "final_student_model"  # save_pretrained of the last epoch's student
RETRIEVAL_INDEX_DIRNAME = "retrieval_index"  # beside FINAL_MODEL_DIRNAME: the BM25 index of the training split
TRAINING_ARGS_FINAL_FILENAME = "training_args_final.json"  # inside FINAL_MODEL_DIRNAME
BEST_MODEL_DIRNAME = "best_student_model"  # --save_best_model: the best epoch's student
EVAL_RESULTS_BEST_FILENAME = "eval_results_best.json"  # inside BEST_MODEL_DIRNAME
TRAINING_ARGS_BEST_FILENAME = "training_args_best.json"  # inside BEST_MODEL_DIRNAME
MODEL_CARD_FILENAME = "README.md"  # Hugging Face model card, inside FINAL_MODEL_DIRNAME and BEST_MODEL_DIRNAME
CHECKPOINTS_DIRNAME = "checkpoints"  # --save_steps: checkpoint-<step>/ directories (sweep.sh looks here too)
TENSORBOARD_DIRNAME = "tensorboard"  # --report_to tensorboard: the event files (tensorboard --logdir OUTPUT_DIR)
LOCK_FILENAME = ".run.lock"  # hidden; never taken for output (see locking.py)

# ---- Files the graph scripts write into their --output_dir ----
SWEEP_CSV_FILENAME = "summary.csv"
SWEEP_MARKDOWN_FILENAME = "summary.md"
COMPARISONS_FILENAME = "comparisons.csv"
OVERVIEW_STEM = "overview"  # overview.<fmt>
TRAINING_CURVES_STEM = "training_curves"  # training_curves.<fmt>
THESIS_FIGURES = ("combined_metrics", "similarity", "loss", "inference_time")  # <swept>_vs_<name>.<fmt>


def figure_filename(stem: str, fmt: str) -> str:
    """'<stem>.<fmt>': a metric's figure is named by its summary key, e.g. avg_loss.png."""
    return f"{stem}.{fmt}"


def heatmap_filename(metric: str, fmt: str) -> str:
    """'heatmap_<metric>.<fmt>'."""
    return f"heatmap_{metric}.{fmt}"


def thesis_figure_filename(swept: str, name: str, fmt: str) -> str:
    """The thesis's name of one of its figures: '<swept>_vs_<name>.<fmt>' (name from THESIS_FIGURES)."""
    return f"{swept}_vs_{name}.{fmt}"


# ---- Top-level keys of distillation_summary.json, in the order they are written ----
ARGS = "args"  # every flag's value (argparse dest -> value)
EPOCHS_TRAINED = "epochs_trained"
TRAINING_DURATION_SECONDS = "training_duration_seconds"
STUDENT_MODEL_NAME = "student_model_name"  # also the flag whose value it copies
STUDENT_MODEL_SIZE_MB = "student_model_size_mb"
TEACHER_MODEL_NAME = "teacher_model_name"  # also the flag whose value it copies
TEACHER_MODEL_SIZE_MB = "teacher_model_size_mb"
COMPRESSION_RATIO_MODEL_SIZE = "compression_ratio_model_size"
FINAL_EVALUATION_METRICS = "final_evaluation_metrics"  # the last evaluation's metric keys (below)
THESIS_SUMMARY_KEYS = (ARGS, EPOCHS_TRAINED, TRAINING_DURATION_SECONDS, STUDENT_MODEL_NAME, STUDENT_MODEL_SIZE_MB,
                       TEACHER_MODEL_NAME, TEACHER_MODEL_SIZE_MB, COMPRESSION_RATIO_MODEL_SIZE,
                       FINAL_EVALUATION_METRICS)
NOT_AVAILABLE = "N/A"  # the thesis's value of a size or ratio it cannot compute
# ... then this suite's:
TRAINING_HISTORY = "training_history"  # the HISTORY entries of metrics.jsonl
DATA_COUNTS = "data_counts"
TEACHER_VS_GROUND_TRUTH_METRICS = "teacher_vs_ground_truth_metrics"
BEST_MODEL_METRIC_VALUE = "best_model_metric_value"
CONFIDENCE_INTERVALS = "confidence_intervals"
ENVIRONMENT = "environment"  # device and library versions
SUITE_SUMMARY_KEYS = (TRAINING_HISTORY, DATA_COUNTS, TEACHER_VS_GROUND_TRUTH_METRICS, BEST_MODEL_METRIC_VALUE,
                      CONFIDENCE_INTERVALS, ENVIRONMENT)
SUMMARY_KEYS = THESIS_SUMMARY_KEYS + SUITE_SUMMARY_KEYS

# The entries of args that the graph loader reads: hyperparameter -> flag dest.
ARG_ALPHA = "alpha_kl_loss_weight"
ARG_TEMPERATURE = "temperature"
ARG_SEED = "seed"

# data_counts: the DataStats of each split's last pass, and the records each split's file holds.
DATA_COUNTS_TRAINING = "training"
DATA_COUNTS_VALIDATION = "validation"
TRAINING_RECORDS_IN_FILE = "training_records_in_file"
VALIDATION_RECORDS_IN_FILE = "validation_records_in_file"

# confidence_intervals: how they were made, then avg_<record metric>: [low, high].
CI_METHOD = "method"
CI_CONFIDENCE = "confidence"
CI_RESAMPLES = "resamples"
CI_SEED = "seed"

# ---- Metric keys ----
# The thesis's averaged scores of one comparison ("script1", after its metrics script).
PRECISION, RECALL, F1, ACCURACY, SIMILARITY_AVG = "precision", "recall", "f1", "accuracy", "similarity_avg"
SCRIPT1_AVERAGED = [PRECISION, RECALL, F1, ACCURACY, SIMILARITY_AVG]
STRICT_EXACT_MATCH = "strict_exact_match"  # this suite's: exact item match after whitespace normalization

# The pairs compared per record: student (s) or teacher (t) against teacher or ground truth (gt).
S_VS_GT, S_VS_T, T_VS_GT = "s_vs_gt", "s_vs_t", "t_vs_gt"


def script1(pair: str) -> str:
    """The suffix of the thesis's scores of a pair: 's_vs_gt' -> 's_vs_gt_script1'."""
    return f"{pair}_script1"


S_VS_GT_SCRIPT1, S_VS_T_SCRIPT1, T_VS_GT_SCRIPT1 = script1(S_VS_GT), script1(S_VS_T), script1(T_VS_GT)
# Student vs teacher with the teacher's lines joined, not the thesis's str() of its list of lines.
S_VS_T_CORRECTED = f"{S_VS_T}_corrected"

# (key suffix, generated text, reference text) of every comparison made per evaluated record. The texts:
# student output, ground truth, teacher (its lines joined with newlines) and teacher_script1 (str() of
# the teacher's field, as the thesis's loader made it: "['assertX(..);']" for a list of lines).
SCRIPT1_COMPARISONS = ((S_VS_T_SCRIPT1, "student", "teacher_script1"), (S_VS_GT_SCRIPT1, "student", "truth"),
                       (S_VS_T_CORRECTED, "student", "teacher"), (T_VS_GT_SCRIPT1, "teacher", "truth"))
STRICT_COMPARISONS = ((S_VS_GT, "student", "truth"), (S_VS_T, "student", "teacher"), (T_VS_GT, "teacher", "truth"))


def record_key(metric: str, suffix: str) -> str:
    """A per-record metric's name in predictions.jsonl: record_key('f1', 's_vs_gt_script1') -> 'f1_s_vs_gt_script1'."""
    return f"{metric}_{suffix}"


def avg(name: str) -> str:
    """The summary's mean of a per-record metric: 'f1_s_vs_gt_script1' -> 'avg_f1_s_vs_gt_script1'."""
    return f"avg_{name}"


def metric_key(metric: str, suffix: str) -> str:
    """A summary metric key: metric_key('f1', 's_vs_gt_script1') -> 'avg_f1_s_vs_gt_script1'."""
    return avg(record_key(metric, suffix))


def strict_key(pair: str) -> str:
    """The per-record strict exact match of a pair: 's_vs_gt' -> 'strict_exact_match_s_vs_gt'."""
    return record_key(STRICT_EXACT_MATCH, pair)


def unaveraged(key: str) -> str:
    """The per-record name of a summary mean: 'avg_f1_s_vs_gt_script1' -> 'f1_s_vs_gt_script1'."""
    return key.removeprefix(avg(""))


def script1_result_key(metric: str) -> str:
    """A score's key in evaluate_assertions_script1_style's result: 'f1' -> 'f1_script1'."""
    return f"{metric}_script1"


# Every per-record metric, in the order the summary averages them (avg(name) for each).
RECORD_METRICS = ([record_key(metric, suffix) for suffix, _, _ in SCRIPT1_COMPARISONS for metric in SCRIPT1_AVERAGED]
                  + [strict_key(pair) for pair, _, _ in STRICT_COMPARISONS])

# This suite's static scores per record (the thesis has none): does a generated block parse as Java statements?
PARSES_AS_JAVA = "parses_as_java"  # parses_as_java_<prediction>, e.g. parses_as_java_student
# The texts an evaluation compares, by the names scoring/registry.py gives them.
STUDENT, TEACHER, RETRIEVAL = "student", "teacher", "retrieval"  # the predictions (and their one-letter pairs)
TRUTH, TEACHER_SCRIPT1 = "truth", "teacher_script1"  # the references: ground truth; str() of the teacher's field
R_VS_GT = "r_vs_gt"  # the retrieval baseline (the nearest training record's assertion) against the ground truth
# Every per-record metric: scoring/registry.py's RECORD_METRICS (its keys with the retrieval baseline:
# RECORD_METRICS above, r_vs_gt_script1 and strict_exact_match_r_vs_gt, then parses_as_java_<prediction>).

AVG_LOSS = "avg_loss"  # eval losses, averaged per batch as the thesis
AVG_HARD_LOSS = "avg_hard_loss"
AVG_SOFT_LOSS = "avg_soft_loss"
AVG_TEACHER_TEXT_LOSS = "avg_teacher_text_loss"  # CE on the teacher's text; only with --teacher_text_weight > 0
AVG_INFERENCE_TIME_PER_SAMPLE_MS = "avg_inference_time_per_sample_ms"
NUM_EVAL_SAMPLES = "num_eval_samples"  # records every student metric is averaged over
NUM_EVAL_SAMPLES_WITH_TEACHER_PREDICTION = "num_eval_samples_with_teacher_prediction"  # ... with a teacher prediction
STUDENT_SHARE_OF_TEACHER_ACCURACY = "student_share_of_teacher_accuracy"  # accuracy s_vs_gt / t_vs_gt
# --teacher_source online, when the validation records hold compressed_logits: mean over their positions of
# KL(stored || online teacher) at the run's T (the archive's storage loss, if the teacher is the archive's)
TEACHER_STORED_VS_ONLINE_KL = "teacher_stored_vs_online_kl"

# --best_model_metric's choices: the thesis's (student vs teacher against the str() of a list-valued teacher
# prediction), then this suite's: student vs teacher with the teacher's lines joined, and strict matches.
BEST_MODEL_METRICS = ([metric_key(metric, suffix) for suffix in (S_VS_T_SCRIPT1, S_VS_GT_SCRIPT1)
                       for metric in (F1, ACCURACY, SIMILARITY_AVG)] + [AVG_LOSS]
                      + [metric_key(metric, S_VS_T_CORRECTED) for metric in SCRIPT1_AVERAGED]
                      + [avg(strict_key(S_VS_GT)), avg(strict_key(S_VS_T))])
DEFAULT_BEST_MODEL_METRIC = metric_key(F1, S_VS_GT_SCRIPT1)
LOWER_IS_BETTER = (AVG_LOSS,)  # of the BEST_MODEL_METRICS; higher is better for every other

# ---- One row of predictions.jsonl: where the record is, its texts, then every RECORD_METRICS value ----
ROW_INDEX = "index"  # 0, 1, ... in file order
ROW_LINE_NUMBER = "line_number"  # in the validation JSONL
ROW_GROUND_TRUTH = "ground_truth"
ROW_TEACHER_PREDICTION = "teacher_prediction"  # the teacher's lines joined with newlines
ROW_TEACHER_PREDICTION_SCRIPT1 = "teacher_prediction_script1"  # str() of the teacher's field, as the thesis
ROW_STUDENT_PREDICTION = "student_prediction"
ROW_RETRIEVAL_PREDICTION = "retrieval_prediction"  # the retrieval baseline's text; only when the run has one
ROW_KEYS = (ROW_INDEX, ROW_LINE_NUMBER, ROW_GROUND_TRUTH, ROW_TEACHER_PREDICTION, ROW_TEACHER_PREDICTION_SCRIPT1,
            ROW_STUDENT_PREDICTION)
# Where the record's test is, copied (after line_number) from the records that carry them (make_dataset.py writes all).
ROW_REPO, ROW_TEST_PATH, ROW_TEST_METHOD, ROW_FOCAL_PATH = "repo", "test_path", "test_method", "focal_path"
ROW_LOCATION_KEYS = (ROW_REPO, ROW_TEST_PATH, ROW_TEST_METHOD, ROW_FOCAL_PATH)

# ---- One entry of metrics.jsonl and of the summary's training_history ----
HISTORY_EPOCH = "epoch"  # 1-based
HISTORY_GLOBAL_STEP = "global_step"
HISTORY_TRAIN = "train"  # {TRAIN_* keys}
HISTORY_EVAL = "eval"  # the evaluation's metric keys; absent without validation records
HISTORY_ELAPSED_SECONDS = "elapsed_seconds"  # since the run started
TRAIN_LOSS = "loss"  # epoch means of the training batches' losses
TRAIN_HARD_LOSS = "hard_loss"
TRAIN_SOFT_LOSS = "soft_loss"
TRAIN_TEACHER_TEXT_LOSS = "teacher_text_loss"  # only with --teacher_text_weight > 0
TRAIN_TEMPERATURE = "epoch_end_temperature"  # T after the epoch's last step; only with --temperature_final
TRAIN_TEACHER_SOURCE = "teacher_source"  # "online"; only with --teacher_source online
TRAIN_ON_POLICY_STEPS = "on_policy_steps"  # the epoch's optimizer steps on the student's samples; only online
TRAIN_REPLAYED_STEPS = "replayed_steps"  # of those, the steps on replayed samples; only with --replay_buffer_size
TRAIN_LMBDA = "lmbda"  # the on-policy share in the epoch; only with --lmbda_schedule adaptive
TRAIN_LEARNING_RATE = "learning_rate"  # at the epoch's end
TRAIN_OPTIMIZER_STEPS = "optimizer_steps"
TRAIN_SKIPPED_NONFINITE_STEPS = "skipped_nonfinite_steps"

# ---- evaluate_execution.py: its output files, one row of execution.jsonl, the keys of execution_summary.json ----
EXECUTION_FILENAME = "execution.jsonl"  # one ROW per record and candidate
EXECUTION_SUMMARY_FILENAME = "execution_summary.json"
EXECUTION_FIGURE_STEM = "execution"  # execution.<fmt>: compile / pass rate and mutation score per candidate
# predictions.jsonl's texts (the retrieval baseline's only where the file has it)
EXECUTION_CANDIDATES = (ROW_GROUND_TRUTH, ROW_TEACHER_PREDICTION, ROW_STUDENT_PREDICTION, ROW_RETRIEVAL_PREDICTION)
EXEC_CANDIDATE = "candidate"  # which text: one of EXECUTION_CANDIDATES
EXEC_TEXT = "text"
EXEC_STATUS = "status"  # STATUS_*
STATUS_COUNTED, STATUS_ENVIRONMENT, STATUS_BAD_INPUT = "counted", "environment", "bad_input"
EXEC_REASON = "reason"  # why a record is not counted (environment or bad input); None when counted
EXEC_COMPILED = "compiled"  # bool; None when not tried
EXEC_PASSED = "passed"
EXEC_OUTCOME = "outcome"  # compiled: passed / assertion_failed / other_exception / system_exit / timeout / ...
EXEC_DETAIL = "detail"  # the first compiler error or the failure's exception, clipped
EXEC_MUTANTS = "mutants"  # compiled mutants of the focal class the candidate ran against (None without --mutants)
EXEC_KILLED = "killed"  # how many of them made the passing candidate's test fail
EXEC_KILLED_MUTANTS = "killed_mutants"  # their numbers among the focal file's mutants (sorted by text)
EXEC_SECONDS = "seconds"  # wall time of the candidate's compile and runs

SUM_RECORDS = "records"
SUM_TRIED, SUM_EXECUTABLE, SUM_NOT_COUNTED_BY_REASON = "tried", "executable", "not_counted_by_reason"
SUM_CANDIDATES = "candidates"
SUM_COMPILE_RATE, SUM_PASS_RATE, SUM_MUTATION_SCORE = "compile_rate", "pass_rate", "mutation_score"
SUM_EXACT_MATCH = "exact_match"  # the text equals the ground truth (whitespace aside), on the same records
SUM_GROUND_TRUTH_MUTATION_SCORE = "ground_truth_mutation_score"  # over the same records as the candidate's score
SUM_OUTCOMES = "outcomes"  # outcome -> count over executable records
SUM_VALUE, SUM_INTERVAL, SUM_COUNT = "value", "interval", "count"  # a rate's mean, 95% interval, records behind it
SUM_PAIRED = "paired"  # "<candidate>_vs_<candidate>": the paired comparisons
SUM_PASS_MCNEMAR_P, SUM_ONLY_FIRST_PASSES, SUM_ONLY_SECOND_PASSES = (
    "pass_mcnemar_p", "only_first_passes", "only_second_passes")
SUM_MUTATION_DIFFERENCE, SUM_MUTATION_DIFFERENCE_INTERVAL, SUM_MUTATION_P = (
    "mutation_score_difference", "mutation_score_difference_interval", "mutation_score_p_value")
SUM_MUTATION = "mutation"  # what --mutants made
SUM_FOCAL_FILES, SUM_GENERATED, SUM_COMPILED_MUTANTS, SUM_NOT_COMPILING = (
    "focal_files", "generated", "compiled", "not_compiling")
SUM_NOT_MUTATED = "focal_files_not_mutated"  # unreadable, or beyond LittleDarwin's Java grammar
SUM_PROJECTS = "projects"  # repo -> {PROJECT_* below}
PROJECT_RECORDS, PROJECT_MAIN_LEFT_OUT, PROJECT_TESTS_NOT_COMPILING = (
    "records", "main_files_left_out", "test_files_not_compiling")  # main sources without classes; records' test files
PROJECT_BUILD_SECONDS, PROJECT_SECONDS, PROJECT_JVM_STARTS = "build_seconds", "seconds", "jvm_starts"
PROJECT_LEFT_OUT_MAIN_FILES = "left_out_main_files"  # main source (relative) -> its first compiler error
PROJECT_MAIN_BUILD_ERROR = "main_build_error"  # why no main class was built (first compiler error); None if built
PROJECT_RESTARTS = "jvm_restarts_after_leftovers"  # candidate JVMs ended because a run left state or files behind
SUM_SETTINGS = "settings"
SUM_SECONDS = "seconds"
SUM_INTERVAL_METHOD = "interval_method"
