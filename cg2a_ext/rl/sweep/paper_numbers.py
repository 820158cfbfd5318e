"""Published returns (mean +- std over seeds), set beside the sweep's numbers by the report.

Each entry names its source. The paper being reproduced is the CG2A paper: its Table 1 is the
colour-shift test ("Random Colors", our ``color_hard``), its Table 2 the video tests
(``video_easy``, ``video_hard``), its Table 4 the ablation on ``video_hard`` (no spread given).
Its baseline columns (SVEA, SODA, SGQN) are copied from earlier papers; where those disagree with
the baselines' own releases, both are kept, with the release's figure labelled by where it
appears (the SGQN repository's results figure, the DMC-GB repository's results table).
Known quirks of the sources: CG2A's Table 1 seems to swap SODA's ball_in_cup_catch and
cartpole_swingup values; DMC-GB trained finger_spin with action repeat 2 (4 here). Returns are
per episode of 1000 simulator steps (range 0-1000).

Its Table 3 is robot manipulation (the ``robot`` family: xArm Reach and PegInBox, 50-step episodes),
a row per task and scene (train, test1-3), SAC / SODA / SVEA / SGQN / CG2A as columns. Our robot
tasks are a re-creation on today's MuJoCo with an arm of primitive geoms, so its numbers are a
reference, not a target. Known quirk: its SAC test rows (test1-3) are the same numbers for both
tasks, probably a copy error; kept as printed.
"""
from __future__ import annotations

from dataclasses import dataclass

CG2A_T1 = "CG2A paper, Table 1"
CG2A_T2 = "CG2A paper, Table 2"
CG2A_T3 = "CG2A paper, Table 3"
CG2A_T4 = "CG2A paper, Table 4"
SGQN_REPO = "SGQN repository results figure"
DMCGB_REPO = "DMC-GB repository results table"

# The paper's tables by test mode (Table 1: colours; Table 2: videos), the mode of its ablation (Table 4)
# and the order of that table's rows (``Algorithm.ablation`` names a run's row).
MODE_TABLE = {"color_hard": "1", "video_easy": "2", "video_hard": "2"}
ABLATION_TABLE = "4"
ABLATION_MODE = "video_hard"
ABLATION_ORDER = ("sac", "ac", "ac+gas", "ac+sgs", "cg2a")

TASKS = ("walker_walk", "walker_stand", "ball_in_cup_catch", "finger_spin", "cartpole_swingup", "cheetah_run")

# Table 3's layout: the tasks of one environment family, a row per task and scene (the modes the paper
# reports, in its order), a column per method (the order its numbers below list them in). The family's other
# modes get a table of their own in the report (ours only), as do success rates (the paper gives none).
SCENE_TABLE = "3"
SCENE_TABLE_FAMILY = "robot"
SCENE_TABLE_TASKS = ("reach", "peg_in_box")
SCENE_TABLE_MODES = ("train", "test1", "test2", "test3")
TABLE_NOTES = {
    SCENE_TABLE: "The paper's SAC test rows (test1-3) are the same numbers for both tasks: probably a copy "
                 "error in the paper; shown as printed.",
}


@dataclass(frozen=True)
class PaperNumber:
    table: str          # "1" to "4" (the CG2A paper's table it belongs to)
    mode: str
    task: str
    method: str         # an algorithm name, or an ablation name of Table 4 (sac, ac, ac+gas, ac+sgs, cg2a)
    mean: float
    std: float | None
    source: str


def _rows(table, mode, method, source, values, tasks=TASKS):
    return [PaperNumber(table, mode, task, method, float(m), None if s is None else float(s), source)
            for task, (m, s) in zip(tasks, values) if m is not None]


def _scene_rows(method, values):
    """Table 3 numbers of one method: {scene: ((reach mean, std), (peg_in_box mean, std))}."""
    return [n for mode, per_task in values.items()
            for n in _rows(SCENE_TABLE, mode, method, CG2A_T3, per_task, SCENE_TABLE_TASKS)]


_NA = (None, None)
NUMBERS: tuple[PaperNumber, ...] = tuple(
    # CG2A's own results
    _rows("1", "color_hard", "cg2a", CG2A_T1, [(902, 46), (972, 23), (972, 10), (928, 43), (856, 40), (375, 32)])
    + _rows("2", "video_easy", "cg2a", CG2A_T2, [(918, 20), (968, 6), (963, 28), (912, 69), (788, 24), (314, 49)])
    + _rows("2", "video_hard", "cg2a", CG2A_T2, [(687, 18), (895, 35), (806, 44), (819, 38), (472, 24), (168, 16)])
    # baselines as the CG2A paper reports them
    + _rows("1", "color_hard", "soda", CG2A_T1, [(692, 68), (893, 12), (805, 28), (793, 128), (949, 19), (228, 76)])
    + _rows("1", "color_hard", "svea", CG2A_T1, [(749, 61), (933, 24), (959, 5), (912, 6), (832, 23), (273, 23)])
    + _rows("1", "color_hard", "sgqn", CG2A_T1, [(785, 57), (929, 12), (864, 75), (905, 43), (840, 13), (162, 38)])
    + _rows("2", "video_easy", "soda", CG2A_T2, [(771, 66), (965, 7), (939, 10), (535, 52), (678, 120), (184, 64)])
    + _rows("2", "video_easy", "svea", CG2A_T2, [(819, 71), (961, 8), (871, 106), (808, 23), (702, 80), (249, 20)])
    + _rows("2", "video_easy", "sgqn", CG2A_T2, [(910, 24), (955, 9), (950, 24), (609, 61), (717, 35), (269, 33)])
    + _rows("2", "video_hard", "soda", CG2A_T2, [(312, 32), (736, 132), (381, 163), (221, 48), (339, 87), (94, 75)])
    + _rows("2", "video_hard", "svea", CG2A_T2, [(385, 63), (747, 43), (403, 174), (335, 58), (393, 45), (105, 37)])
    + _rows("2", "video_hard", "sgqn", CG2A_T2, [(739, 21), (851, 24), (782, 57), (540, 53), (428, 60), (144, 34)])
    # the baselines' own releases, where they differ from the CG2A paper's copy
    + _rows("1", "color_hard", "soda", DMCGB_REPO, [(692, 68), (893, 12), (949, 19), (793, 128), (805, 28), _NA])
    + _rows("1", "color_hard", "svea", DMCGB_REPO, [(749, 61), (933, 24), (959, 5), (972, 6), (832, 23), _NA])
    + _rows("2", "video_hard", "svea", SGQN_REPO, [(385, 63), (747, 43), (498, 174), (174, 39), (392, 37), _NA])
    + _rows("2", "video_hard", "sgqn", SGQN_REPO, [(739, 21), (851, 24), (782, 57), (540, 53), (526, 41), _NA])
    + _rows("2", "video_easy", "svea", SGQN_REPO, [(828, 66), (966, 5), (908, 55), (537, 11), (702, 80), _NA])
    # Table 4: ablations on video_hard (walker_walk, walker_stand, ball_in_cup_catch, finger_spin)
    + _rows("4", "video_hard", "sac", CG2A_T4, [(144, None), (289, None), (92, None), (71, None)])
    + _rows("4", "video_hard", "ac", CG2A_T4, [(274, None), (557, None), (418, None), (473, None)])
    + _rows("4", "video_hard", "ac+gas", CG2A_T4, [(424, None), (618, None), (563, None), (474, None)])
    + _rows("4", "video_hard", "ac+sgs", CG2A_T4, [(619, None), (805, None), (724, None), (757, None)])
    + _rows("4", "video_hard", "cg2a", CG2A_T4, [(687, None), (895, None), (806, None), (819, None)])
    # Table 3: robot manipulation, (reach, peg_in_box) per scene; the methods in the paper's column order
    + _scene_rows("sac", {"train": [(9.7, 2), (-46.7, 7)], "test1": [(-20.9, 16), (-20.9, 16)],
                          "test2": [(-21.9, 14), (-21.9, 14)], "test3": [(-43.2, 6), (-43.2, 6)]})
    + _scene_rows("soda", {"train": [(31.8, 1), (180.1, 2)], "test1": [(-30.9, 43), (16.9, 44)],
                           "test2": [(-20.2, 29), (0.7, 30)], "test3": [(-68.4, 30), (73.6, 31)]})
    + _scene_rows("svea", {"train": [(32.2, 5), (177.5, 3)], "test1": [(-17.6, 10), (-21.3, 10)],
                           "test2": [(-2.1, 39), (96.8, 42)], "test3": [(1.4, 29), (40.5, 28)]})
    + _scene_rows("sgqn", {"train": [(31.8, 1), (183.9, 9)], "test1": [(14.4, 14), (-72.0, 14)],
                           "test2": [(31.0, 3), (110.7, 3)], "test3": [(29.2, 7), (154.6, 7)]})
    + _scene_rows("cg2a", {"train": [(39.6, 4), (189.9, 11)], "test1": [(28.7, 1), (155.4, 17)],
                           "test2": [(36.7, 4), (157.8, 22)], "test3": [(35.4, 4), (174.0, 21)]})
)

PRIMARY_SOURCES = (CG2A_T1, CG2A_T2, CG2A_T3, CG2A_T4)


def methods_of(table: str) -> tuple[str, ...]:
    """The methods a table of the paper reports, in its column order (the order ``NUMBERS`` lists them in)."""
    return tuple(dict.fromkeys(n.method for n in NUMBERS if n.table == table and n.source in PRIMARY_SOURCES))


def lookup(table: str, mode: str, task: str, method: str, primary: bool = True) -> list[PaperNumber]:
    """The published numbers for one cell (the CG2A paper's only, unless ``primary`` is False)."""
    return [n for n in NUMBERS if (n.table, n.mode, n.task, n.method) == (table, mode, task, method)
            and (not primary or n.source in PRIMARY_SOURCES)]
