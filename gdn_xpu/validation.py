"""Argument checks of the raw op, run before any kernel and before anything is written."""

import torch

ACT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
STATE_DTYPES = (torch.float32, torch.bfloat16)


def check_gdn_attention_args(**a) -> None:
    hk, hv = a["num_k_heads"], a["num_v_heads"]
    tp = a["tp_size"]
    K, V = a["head_k_dim"], a["head_v_dim"]
    if tp < 1 or hk % tp or hv % tp:
        raise ValueError(f"tp_size={tp} must divide num_k_heads={hk} and num_v_heads={hv}")
    if hv % hk:
        raise ValueError(f"num_v_heads={hv} must be a multiple of num_k_heads={hk}")
    if K % 16 or V % 16 or not (16 <= K <= 256 and 16 <= V <= 256):
        raise ValueError(f"head_k_dim={K}, head_v_dim={V}: supported head dims are multiples "
                         "of 16 from 16 to 256")
    qkvz = a["projected_states_qkvz"]
    if qkvz.dtype not in ACT_DTYPES:
        raise TypeError(f"projected_states_qkvz: dtype {qkvz.dtype} not in {ACT_DTYPES}")
    if a["ssm_state"].dtype not in STATE_DTYPES:
        raise TypeError(f"ssm_state: dtype {a['ssm_state'].dtype} not in {STATE_DTYPES}")
