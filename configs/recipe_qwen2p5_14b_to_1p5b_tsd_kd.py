# Copyright 2026 The opd_jax Authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
r"""Recipe: Qwen2.5-14B -> Qwen2.5-1.5B with TSD-KD on a local math jsonl.

  python scripts/train.py --config=configs/recipe_qwen2p5_14b_to_1p5b_tsd_kd.py \
      --workdir=/ckpt/tsd_qwen25 --config.student=/models/Qwen2.5-1.5B-Instruct \
      --config.teacher=/models/Qwen2.5-14B-Instruct \
      --config.data.path=/data/math.jsonl

Settings of docs/methods.md §2 (the released TSD-KD launch): beta 0.9, alpha
0.1, c 0.1, k 10, EM on the top 10% entropy tokens, fully on-policy, temperature
1, 128 new tokens, lr 5e-6 cosine with 10% warmup, 128 sequences per update,
bf16. The 1.5B student's embedding is padded to the teacher's 152064 rows
(the same tokenizer; `pad_student_vocab`), as the released code does.
"""

from opd_jax.trainer.config import default_config


def get_config():
  c = default_config()
  c.method = "tsd_kd"
  c.student = "/models/Qwen2.5-1.5B-Instruct"
  c.teacher = "/models/Qwen2.5-14B-Instruct"
  c.student_preset, c.teacher_preset = "qwen2p5_1p5b", "qwen2p5_14b"
  c.dtype = "bfloat16"
  c.pad_student_vocab = True  # 151936 -> the teacher's 152064 rows
  c.tsd_kd.beta = 0.9
  c.tsd_kd.alpha = 0.1
  c.tsd_kd.opener_threshold = 0.1
  c.tsd_kd.top_k = 10
  c.tsd_kd.em_ratio = 0.1
  c.tsd_kd.pl_code_compat = False
  c.lmbda = 1.0
  c.batch_size = 128
  c.max_prompt_len = 896
  c.max_new_tokens = 128
  c.total_steps = 1500
  c.sampling.temperature = 1.0
  c.optimizer.learning_rate = 5e-6
  c.optimizer.warmup_steps = 150
  c.optimizer.end_lr_fraction = 0.0
  c.data.source = "file"
  c.data.path = "/data/math_train.jsonl"
  c.data.eval_path = "/data/gsm8k_test.jsonl"
  c.data.question_field = "question"
  c.data.answer_field = "answer"
  c.checkpoint_every = 100
  c.eval_every = 250
  c.eval_examples = 1319
  c.mesh.update(dict(data=1, fsdp=-1, tensor=1))
  # The trunks over 8 groups of rows (two rows per device per group on 8
  # devices; `--dry_run` prints the memory this saves).
  c.micro_batches = 8
  return c
