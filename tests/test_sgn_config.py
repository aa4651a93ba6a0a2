"""The options record of SGN: each option written once, in SGNConfig, and checked there."""

import dataclasses
import inspect

import numpy as np
import pytest
from helpers import TEST_MODE, build_problem
from numpydoc.docscrape import ClassDoc

from sgn_theano import SGN, SGNConfig, SGNInputError, SGNInputTypeError


def documented_options() -> dict[str, str]:
    """``{name: type}`` of the Parameters section of SGNConfig's docstring."""
    entries = ClassDoc(SGNConfig, config={"show_class_members": False})["Parameters"]
    return {name.strip(): entry.type for entry in entries for name in entry.name.split(",")}


def test_every_option_is_a_field_documented_once_in_sgn_config():
    fields = [field.name for field in dataclasses.fields(SGNConfig)]
    assert sorted(documented_options()) == sorted(fields)
    assert len(set(fields)) == len(fields)


def test_sgn_takes_the_options_through_sgn_config_alone():
    """``SGN``'s signature holds the graph, the mode and the communicator; every option
    goes through ``**options`` to SGNConfig, so no default is written twice."""
    parameters = inspect.signature(SGN).parameters
    assert list(parameters) == ["loss", "params", "outputs", "inputs", "mode", "comm", "options"]
    assert parameters["options"].kind is inspect.Parameter.VAR_KEYWORD
    loss, outputs, params, inputs = build_problem("squared_error", "tanh", "float64")
    optimizer = SGN(loss, params, outputs, inputs, mode=TEST_MODE, max_cg_iters=4)
    assert optimizer.config == SGNConfig(max_cg_iters=4)


def test_an_unknown_option_is_named_with_the_known_ones():
    with pytest.raises(SGNInputTypeError, match=r"Unknown SGN option\(s\) \['max_iters'\]"
                       r".*'max_cg_iters'"):
        SGNConfig.from_options({"max_iters": 3})
    assert SGNConfig.from_options({"damping": 0.5}) == SGNConfig(damping=0.5)


def test_bad_options_raise_the_library_error_which_is_still_a_value_or_type_error():
    with pytest.raises(SGNInputError) as caught:
        SGNConfig(momentum=1.0)
    assert isinstance(caught.value, ValueError) and not isinstance(caught.value, TypeError)
    with pytest.raises(SGNInputTypeError) as caught:
        SGNConfig(max_cg_iters=2.5)
    assert isinstance(caught.value, TypeError) and isinstance(caught.value, SGNInputError)


def test_config_reads_like_a_mapping_and_is_frozen():
    config = SGNConfig(max_cg_iters=np.int32(5), damping=np.float32(0.5), min_damping=0.5)
    assert dict(config)["max_cg_iters"] == 5 and type(config["max_cg_iters"]) is int
    assert type(config["damping"]) is float
    assert list(config) == [field.name for field in dataclasses.fields(SGNConfig)]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.damping = 1.0
    with pytest.raises(KeyError):
        config["no_such_option"]
    assert config == SGNConfig(max_cg_iters=5, damping=0.5, min_damping=0.5)
    assert config != SGNConfig(max_cg_iters=6, damping=0.5, min_damping=0.5)


def test_config_records_a_callable_preconditioner_as_custom():
    loss, outputs, params, inputs = build_problem("squared_error", "tanh", "float64")

    def identity(blocks):
        return blocks

    optimizer = SGN(loss, params, outputs, inputs, preconditioner=identity, mode=TEST_MODE)
    assert optimizer.config.preconditioner is identity  # one place: the config itself
    assert optimizer.config.to_dict()["preconditioner"] == "custom"
    assert optimizer.state_dict()["config"] == optimizer.config.to_dict()
