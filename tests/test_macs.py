"""count_macs counts every product of a forward pass: layers, attention and recurrent steps."""

import pytest
import torch
from torch import nn

import prunekit as pk


def test_transformer_encoder_macs_match_the_hand_formula():
    torch.manual_seed(0)
    d, heads, ff, layers, n, length = 64, 4, 128, 2, 2, 10
    enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(d, heads, ff, batch_first=True), layers)
    tokens = n * length
    projections = 4 * tokens * d * d                    # Q, K, V and the output projection
    attention = 2 * n * heads * length * length * (d // heads)  # QK^T and AV
    ffn = 2 * tokens * d * ff
    expected = layers * (projections + attention + ffn)
    assert pk.count_macs(enc, torch.randn(n, length, d)) == expected
    enc.train()
    assert pk.count_macs(enc, torch.randn(n, length, d)) == expected  # eval inside, mode restored
    assert enc.training


@pytest.mark.parametrize("cls, gates", [(nn.RNN, 1), (nn.GRU, 3), (nn.LSTM, 4)])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_recurrent_macs_count_every_step(cls, gates, bidirectional):
    torch.manual_seed(0)
    rnn = cls(16, 32, num_layers=2, batch_first=True, bidirectional=bidirectional)
    n, steps = 3, 7
    dirs = 2 if bidirectional else 1
    per_step = dirs * gates * 32 * (16 + 32) + dirs * gates * 32 * (dirs * 32 + 32)
    assert pk.count_macs(rnn, torch.randn(n, steps, 16)) == n * steps * per_step


def test_packed_sequences_count_only_the_real_steps():
    torch.manual_seed(0)
    lstm = nn.LSTM(8, 16)
    x = nn.utils.rnn.pack_padded_sequence(torch.randn(5, 2, 8), torch.tensor([5, 3]))
    assert pk.count_macs(lstm, x) == pk.count_macs(lstm, (x,)) == (5 + 3) * 4 * 16 * (8 + 16)


def test_nonzero_only_drops_the_multiplications_by_masked_weights():
    torch.manual_seed(0)
    model = pk.models.LeNet5()
    x = torch.randn(2, 1, 28, 28)
    dense = pk.count_macs(model, x)
    pk.prune(model, 0.5)  # every layer loses exactly half of its weights
    assert pk.count_macs(model, x) == dense
    assert pk.count_macs(model, x, nonzero_only=True) == dense // 2
