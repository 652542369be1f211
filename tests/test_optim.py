"""Tests of nnscratch.optim.SGD against a hand-written copy of PyTorch's update rule and,
when PyTorch is installed, against ``torch.optim.SGD`` itself."""
import copy

import numpy as np
import pytest

from nnscratch import SGD, Dense, Parameter

SHAPES = [(3, 4), (4,), (2, 2, 3)]
STEPS = 6

CONFIGS = [
    dict(lr=0.1),
    dict(lr=0.05, momentum=0.9),
    dict(lr=0.05, momentum=0.9, dampening=0.3),
    dict(lr=0.1, weight_decay=0.01),
    dict(lr=0.05, momentum=0.9, nesterov=True),
    dict(lr=0.02, momentum=0.8, dampening=0.5, weight_decay=0.1),
    dict(lr=0.03, momentum=0.7, weight_decay=0.05, nesterov=True),
    dict(lr=0.0, momentum=0.9),
]


def config_id(config):
    return ",".join(f"{k}={v}" for k, v in config.items())


def initial_values(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape) for shape in SHAPES]


def gradient_sequence(steps=STEPS, seed=1):
    rng = np.random.default_rng(seed)
    return [[rng.standard_normal(shape) for shape in SHAPES] for _ in range(steps)]


def reference_sgd(values, grads_per_step, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
    """PyTorch's ``torch.optim.SGD`` update (``_single_tensor_sgd``), written out with plain NumPy:

        d_p = g + weight_decay * p
        buf = d_p (first step)  |  buf = momentum * buf + (1 - dampening) * d_p
        d_p = d_p + momentum * buf (nesterov)  |  d_p = buf
        p   = p - lr * d_p

    Returns the parameter values after every step."""
    values = [v.copy() for v in values]
    buffers = [None] * len(values)
    history = []
    for grads in grads_per_step:
        for i, (p, g) in enumerate(zip(values, grads)):
            d_p = g + weight_decay * p if weight_decay != 0 else g
            if momentum != 0:
                if buffers[i] is None:
                    buffers[i] = d_p.copy()
                else:
                    buffers[i] = momentum * buffers[i] + (1 - dampening) * d_p
                d_p = d_p + momentum * buffers[i] if nesterov else buffers[i]
            values[i] = p - lr * d_p
        history.append([v.copy() for v in values])
    return history


def run_nnscratch(params, optimizer, grads_per_step):
    history = []
    for grads in grads_per_step:
        optimizer.zero_grad()
        for p, g in zip(params, grads):
            p.accumulate_grad(g)
        optimizer.step()
        history.append([p.data.copy() for p in params])
    return history


def make_params(values=None):
    return [Parameter(v.copy()) for v in (values if values is not None else initial_values())]


# ----------------------------------------------------------------------------- update rule

@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
def test_sgd_matches_pytorch_rule(config, backend):
    params = make_params()
    grads = gradient_sequence()
    ours = run_nnscratch(params, SGD(params, **config), grads)
    expected = reference_sgd(initial_values(), grads, **config)
    for step, (a, b) in enumerate(zip(ours, expected)):
        for i, (x, y) in enumerate(zip(a, b)):
            np.testing.assert_allclose(x, y, rtol=1e-13, atol=1e-15, err_msg=f"step {step}, parameter {i}")
    assert all(p.dtype == np.float64 for p in params)


def test_plain_sgd_is_the_seed_formula():
    """θ ← θ − η ∇L(θ), one step, by hand."""
    p = Parameter(np.array([1.0, -2.0, 3.0]))
    p.grad = np.array([0.5, 0.5, -1.0])
    SGD([p], lr=0.1).step()
    np.testing.assert_allclose(p.data, [0.95, -2.05, 3.1], rtol=0, atol=1e-15)


def test_momentum_by_hand():
    """Two steps with momentum 0.9: b1 = g1; b2 = 0.9 b1 + g2."""
    p = Parameter(np.array([1.0]))
    opt = SGD([p], lr=0.1, momentum=0.9)
    p.grad = np.array([1.0])
    opt.step()
    np.testing.assert_allclose(p.data, [0.9])
    p.grad = np.array([2.0])
    opt.step()  # b = 0.9 + 2 = 2.9
    np.testing.assert_allclose(p.data, [0.9 - 0.29])
    np.testing.assert_allclose(opt.state_dict()["state"][0]["momentum_buffer"], [2.9])


def test_float32_parameters_stay_float32():
    layer = Dense(4, 3)
    opt = SGD(layer.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3, nesterov=True)
    for _ in range(2):
        layer.weight.grad = np.ones((3, 4), dtype=np.float32)
        layer.bias.grad = np.ones(3, dtype=np.float32)
        opt.step()
    assert layer.weight.dtype == np.float32 and layer.bias.dtype == np.float32
    assert all(s["momentum_buffer"].dtype == np.float32 for s in opt.state_dict()["state"].values())


def test_momentum_buffer_does_not_alias_the_gradient():
    p = Parameter(np.zeros(3))
    opt = SGD([p], lr=0.1, momentum=0.9)
    p.accumulate_grad(np.ones(3))
    opt.step()
    p.accumulate_grad(np.ones(3))  # accumulates in place into p.grad, not into the buffer
    np.testing.assert_array_equal(opt.state_dict()["state"][0]["momentum_buffer"], np.ones(3))


def test_parameters_without_grad_are_skipped():
    a, b = make_params()[:2]
    before = b.data.copy()
    opt = SGD([a, b], lr=0.1, momentum=0.9, weight_decay=0.1)
    a.grad = np.ones_like(a.data)
    opt.step()
    np.testing.assert_array_equal(b.data, before)  # no gradient: not even weight decay
    assert list(opt.state_dict()["state"]) == [0]


# ----------------------------------------------------------------------------- parameter groups

def test_parameter_groups_with_different_hyper_parameters():
    values = initial_values()
    grads = gradient_sequence()
    params = make_params(values)
    opt = SGD(
        [
            {"params": params[:2], "lr": 0.01},
            {"params": params[2:], "momentum": 0.5, "nesterov": True},
        ],
        lr=0.1, momentum=0.9, weight_decay=0.02,
    )
    assert opt.param_groups[0]["lr"] == 0.01 and opt.param_groups[0]["momentum"] == 0.9
    assert opt.param_groups[1]["lr"] == 0.1 and opt.param_groups[1]["momentum"] == 0.5
    assert opt.param_groups[0]["weight_decay"] == opt.param_groups[1]["weight_decay"] == 0.02
    ours = run_nnscratch(params, opt, grads)
    first = reference_sgd(values[:2], [g[:2] for g in grads], lr=0.01, momentum=0.9, weight_decay=0.02)
    second = reference_sgd(values[2:], [g[2:] for g in grads], lr=0.1, momentum=0.5, weight_decay=0.02,
                           nesterov=True)
    for step in range(STEPS):
        for x, y in zip(ours[step], first[step] + second[step]):
            np.testing.assert_allclose(x, y, rtol=1e-13, atol=1e-15)


def test_groups_from_generators_and_module_parameters():
    body, head = Dense(4, 3), Dense(3, 2)
    opt = SGD([{"params": body.parameters(), "lr": 1e-3}, {"params": head.parameters()}], lr=0.1)
    assert [len(g["params"]) for g in opt.param_groups] == [2, 2]
    assert [g["lr"] for g in opt.param_groups] == [1e-3, 0.1]
    assert list(opt.parameters()) == list(body.parameters()) + list(head.parameters())


# ----------------------------------------------------------------------------- frozen parameters

@pytest.mark.parametrize("when", ["before_building", "after_building"])
def test_frozen_parameter_is_untouched(when):
    params = make_params()
    frozen = params[1]
    if when == "before_building":
        frozen.requires_grad = False
    opt = SGD(params, lr=0.1, momentum=0.9, weight_decay=0.5)
    if when == "after_building":
        frozen.requires_grad = False
    before = frozen.data.copy()
    for grads in gradient_sequence(3):
        for p, g in zip(params, grads):
            p.grad = g.copy()  # even a stale gradient on a frozen parameter must be ignored
        opt.step()
    np.testing.assert_array_equal(frozen.data, before)  # no update, no weight decay
    state = opt.state_dict()["state"]
    assert sorted(state) == [0, 2]  # no momentum buffer for the frozen one
    assert not np.array_equal(params[0].data, initial_values()[0])


def test_frozen_after_momentum_buffer_exists():
    values = initial_values()
    grads = gradient_sequence(5)
    params = make_params(values)
    opt = SGD(params, lr=0.1, momentum=0.9, weight_decay=0.5)
    run_nnscratch(params, opt, grads[:2])
    buffer_before = opt.state_dict()["state"][1]["momentum_buffer"]
    value_before = params[1].data.copy()

    params[1].requires_grad = False
    for grads_now in grads[2:4]:
        for p, g in zip(params, grads_now):
            p.grad = g.copy()
        opt.step()
    np.testing.assert_array_equal(params[1].data, value_before)
    np.testing.assert_array_equal(opt.state_dict()["state"][1]["momentum_buffer"], buffer_before)

    # unfrozen, it resumes from the buffer it had, as if the frozen steps never happened for it
    params[1].requires_grad = True
    run_nnscratch(params, opt, grads[4:])
    expected = reference_sgd([values[1]], [[g[1]] for g in grads[:2] + grads[4:]],
                             lr=0.1, momentum=0.9, weight_decay=0.5)[-1][0]
    np.testing.assert_allclose(params[1].data, expected, rtol=1e-13, atol=1e-15)


# ----------------------------------------------------------------------------- checkpoints

@pytest.mark.parametrize("config", [CONFIGS[1], CONFIGS[5], CONFIGS[6]], ids=config_id)
def test_state_dict_reproduces_subsequent_steps(config):
    grads = gradient_sequence(8)
    params = make_params()
    opt = SGD(params, **config)
    run_nnscratch(params, opt, grads[:4])
    saved_state = opt.state_dict()
    saved_values = [p.data.copy() for p in params]
    continued = run_nnscratch(params, opt, grads[4:])

    # the saved state is a copy: the steps above did not change it
    resumed_params = make_params(saved_values)
    resumed = SGD(resumed_params, lr=123.0)  # hyper-parameters come from the state dict
    resumed.load_state_dict(copy.deepcopy(saved_state))
    assert {k: resumed.param_groups[0][k] for k in SGD.DEFAULTS} == {
        k: saved_state["param_groups"][0][k] for k in SGD.DEFAULTS
    }
    replayed = run_nnscratch(resumed_params, resumed, grads[4:])
    for a, b in zip(continued, replayed):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)


def test_state_dict_layout():
    params = make_params()
    opt = SGD([{"params": params[:1], "lr": 0.5}, {"params": params[1:]}], lr=0.1, momentum=0.9)
    for p in params:
        p.grad = np.ones_like(p.data)
    opt.step()
    state = opt.state_dict()
    assert [g["params"] for g in state["param_groups"]] == [[0], [1, 2]]
    assert [g["lr"] for g in state["param_groups"]] == [0.5, 0.1]
    assert set(state["param_groups"][0]) == {"params", *SGD.DEFAULTS}
    assert sorted(state["state"]) == [0, 1, 2]
    assert all(isinstance(s["momentum_buffer"], np.ndarray) for s in state["state"].values())
    state["state"][0]["momentum_buffer"][:] = 99  # a copy: the optimizer is unaffected
    assert not np.any(opt.state_dict()["state"][0]["momentum_buffer"] == 99)


def test_load_state_dict_errors():
    params = make_params()
    opt = SGD(params, lr=0.1, momentum=0.9)
    for p in params:
        p.grad = np.ones_like(p.data)
    opt.step()
    state = opt.state_dict()
    with pytest.raises(ValueError, match="groups"):
        SGD(params[:2], lr=0.1).load_state_dict(state)
    bad = copy.deepcopy(state)
    bad["state"][1]["momentum_buffer"] = np.zeros((5,))
    with pytest.raises(ValueError, match=r"\(5,\).*\(4,\)"):
        SGD(make_params(), lr=0.1, momentum=0.9).load_state_dict(bad)


# ----------------------------------------------------------------------------- validation

@pytest.mark.parametrize("kwargs, error, match", [
    (dict(lr=-0.1), ValueError, "lr"),
    (dict(lr=0.1, momentum=-0.5), ValueError, "momentum"),
    (dict(lr=0.1, weight_decay=-1e-4), ValueError, "weight_decay"),
    (dict(lr=0.1, nesterov=True), ValueError, "nesterov"),
    (dict(lr=0.1, momentum=0.9, dampening=0.1, nesterov=True), ValueError, "nesterov"),
])
def test_hyper_parameter_validation(kwargs, error, match):
    with pytest.raises(error, match=match):
        SGD(make_params(), **kwargs)


def test_group_hyper_parameters_are_validated_too():
    params = make_params()
    with pytest.raises(ValueError, match="lr"):
        SGD([{"params": params[:1], "lr": -1.0}, {"params": params[1:]}], lr=0.1)


def test_parameter_list_validation():
    params = make_params()
    with pytest.raises(ValueError, match="empty"):
        SGD([], lr=0.1)
    with pytest.raises(TypeError, match="Parameter"):
        SGD([np.zeros(3)], lr=0.1)
    with pytest.raises(ValueError, match="more than one group"):
        SGD([{"params": params[:2]}, {"params": params[1:]}], lr=0.1)


def test_zero_grad():
    params = make_params()
    opt = SGD(params, lr=0.1)
    for p in params:
        p.grad = np.ones_like(p.data)
    opt.zero_grad()
    assert all(p.grad is None for p in params)


# ----------------------------------------------------------------------------- PyTorch parity

TORCH_CONFIGS = CONFIGS[1:7]


@pytest.mark.parametrize("config", TORCH_CONFIGS, ids=config_id)
def test_matches_torch_optim_sgd(config, backend):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(2)
    values = initial_values()
    grads = gradient_sequence()
    params = make_params(values)
    opt = SGD(params, **config)
    ours = run_nnscratch(params, opt, grads)

    tparams = [torch.nn.Parameter(torch.tensor(v, dtype=torch.float64)) for v in values]
    topt = torch.optim.SGD(tparams, **config)
    for step, step_grads in enumerate(grads):
        topt.zero_grad()
        for p, g in zip(tparams, step_grads):
            p.grad = torch.tensor(g, dtype=torch.float64)
        topt.step()
        for i, (tp, x) in enumerate(zip(tparams, ours[step])):
            np.testing.assert_allclose(x, tp.detach().numpy(), rtol=1e-13, atol=1e-15,
                                       err_msg=f"step {step}, parameter {i}")
    # the momentum buffers agree too, under the same (positional) keys
    if config.get("momentum"):
        tstate = topt.state_dict()["state"]
        ostate = opt.state_dict()["state"]
        assert sorted(tstate) == sorted(ostate)
        for k in ostate:
            np.testing.assert_allclose(ostate[k]["momentum_buffer"], tstate[k]["momentum_buffer"].numpy(),
                                       rtol=1e-13, atol=1e-15)


def test_matches_torch_with_groups_and_a_frozen_parameter():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(2)
    values = initial_values()
    grads = gradient_sequence()
    params = make_params(values)
    params[2].requires_grad = False
    opt = SGD([{"params": params[:1], "lr": 0.01, "nesterov": True}, {"params": params[1:], "dampening": 0.2}],
              lr=0.1, momentum=0.9, weight_decay=0.01)
    for step_grads in grads:
        opt.zero_grad()
        for p, g in zip(params[:2], step_grads):  # a frozen parameter gets no gradient, as in torch
            p.accumulate_grad(g)
        opt.step()

    tparams = [torch.nn.Parameter(torch.tensor(v, dtype=torch.float64)) for v in values]
    tparams[2].requires_grad_(False)
    topt = torch.optim.SGD([{"params": tparams[:1], "lr": 0.01, "nesterov": True},
                            {"params": tparams[1:], "dampening": 0.2}], lr=0.1, momentum=0.9, weight_decay=0.01)
    for step_grads in grads:
        topt.zero_grad()
        for p, g in zip(tparams[:2], step_grads):
            p.grad = torch.tensor(g, dtype=torch.float64)
        topt.step()
    for p, tp in zip(params, tparams):
        np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=1e-13, atol=1e-15)
    np.testing.assert_array_equal(params[2].data, values[2])


def test_step_on_a_parameter_whose_data_was_replaced_by_a_strided_view():
    p = Parameter(np.zeros((3, 2)))
    p.data = np.arange(6.0).reshape(2, 3).T  # not C-contiguous: the update needs a C-ordered array
    p.accumulate_grad(np.ones((3, 2)))
    SGD([p], lr=0.5).step()
    np.testing.assert_array_equal(p.data, np.arange(6.0).reshape(2, 3).T - 0.5)
    assert p.data.flags.c_contiguous
