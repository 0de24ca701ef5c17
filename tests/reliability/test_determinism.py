"""Same config and seed, two runs: identical metrics.jsonl and checkpoints on CPU.

(test_kill_resume.py compares a run pieced together from four processes with
the same reference, so this holds across processes too.)
"""

import json
import os

import pytest

from tests import scenario as rel

pytestmark = pytest.mark.slow  # Trains or compiles many programs: the full suite only.


def _rows(workdir):
  return [{k: v for k, v in r.items() if k not in rel.TIMING_KEYS}
          for r in rel.metric_rows(workdir)]


def test_two_runs_write_identical_metrics_and_checkpoints(synthetic_data_dir, reference_run,
                                                          tmp_path):
  again = str(tmp_path / 'again')
  rel.run_in_process(rel.scenario_config(synthetic_data_dir), again)
  first, second = _rows(reference_run), _rows(again)
  assert [r['step'] for r in first] == [1, 2, 3, 4, 5, 6, 6]  # Six train rows, one eval row.
  assert json.dumps(first) == json.dumps(second)  # Bitwise: every float printed in full.
  for step in (2, 4, 6):
    rel.assert_same_state(rel.load_checkpoint(reference_run, step),
                          rel.load_checkpoint(again, step), f'step {step}')
  with open(os.path.join(reference_run, 'config.json')) as a, \
      open(os.path.join(again, 'config.json')) as b:
    assert a.read() == b.read()
