from shearing import demo


def test_demo_prints_shape_parameters_and_a_continuation(smollm2_dir, capsys):
    assert demo.main(["--max-new-tokens", "5"]) == 0
    out = capsys.readouterr().out
    assert "query heads / kv heads    9 / 3" in out
    assert "parameters                134,515,008" in out
    continuation = out.split("greedy continuation (5 tokens")[1].splitlines()[1]
    assert len(continuation.strip()) > len(demo.DEFAULT_PROMPT)
