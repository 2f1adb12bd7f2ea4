"""The World Models tab (tabs/world_models.py): its pictures (whole-pixel frames, z as bars), the real drive it
streams, the dream a user steers with buttons or hands to a driver, and the dream set beside reality.

The shipped V and M drive everything here (CI has them; a checkout without them skips these tests, or fails
them under CI=true); a test that needs a controller skips until that controller is shipped. Episodes are short
(50-100 steps at about 8 ms each) and the dream's playback pause (DREAM_FPS) is taken out.
"""
from __future__ import annotations

import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import torch
from PIL import Image

from core import world_models as wm
from core.registry import list_shipped
from core.runtime import MAX_SEED
from tabs import world_models as tab
from tabs.classroom import explanations
from tabs.common import user_errors
from tests.conftest import require, require_module

ROOT = Path(__file__).resolve().parent.parent
NAN, INF = float("nan"), float("inf")
WHITE, BLACK = (255, 255, 255), (0, 0, 0)
STEPS = 50  # a short real episode: about half a second here
TRAIN = "python -m core.train world_models --stage rollouts, then --stage vae and --stage rnn"


# --- what the tests need ---------------------------------------------------------------------------------

def needs_models():
    require(tab._ready(), f"V and M of World Models are not shipped yet: {TRAIN}")


def needs_car():
    for module in ("gymnasium", "Box2D", "pygame"):
        require_module(module, f"{module} is not installed: CarRacing needs `pip install \"gymnasium[box2d]\"`")


def needs_controller(key: str):
    needs_models()
    require(f"controller_{key}" in list_shipped("world_models"),
            f"the controller {tab.CONTROLLERS[key]} is not shipped yet: "
            f"python -m core.train world_models --stage controller --where {key}")


@pytest.fixture(autouse=True)
def no_playback_pause(monkeypatch):
    """The dream is shown at DREAM_FPS in the page; here frames come as fast as they are made."""
    monkeypatch.setattr(tab, "DREAM_FPS", 1e9)


@pytest.fixture
def models():
    needs_models()
    return wm.load_vae(), wm.load_rnn()


@pytest.fixture
def car(models):
    needs_car()
    return models


def refusal(handler, *args) -> str:
    """The message a user sees when the handler, wrapped as the tab wraps it, refuses these inputs."""
    with pytest.raises(gr.Error) as refused:
        result = user_errors(handler)(*args)
        if hasattr(result, "__next__"):
            list(result)
    message = str(refused.value.message)
    assert message.endswith(".") and "Traceback" not in message, message
    return message


def noisy_episode(track: int, steps: int):
    """The noisy driver on `track`, straight through the environment (not core.world_models.drive): the
    observations it saw before each step and its return."""
    env = wm.make_env(steps)
    observation, _ = env.reset(seed=track)
    policy, observations, total = wm.NoisyPolicy(track), [], 0.0
    for _ in range(steps):
        observations.append(observation)
        observation, reward, terminated, truncated, _ = env.step(policy())
        total += float(reward)
        if terminated or truncated:
            break
    env.close()
    return observations, total


def frames_of(updates) -> list[np.ndarray]:
    return [update[1] for update in updates]


def spy_on_dream_actions(monkeypatch) -> list[np.ndarray]:
    """Every action a Dream is stepped with, in order."""
    actions, step = [], wm.Dream.step

    def spied(self, action, tau):
        actions.append(np.asarray(action, dtype=np.float32).copy())
        return step(self, action, tau)

    monkeypatch.setattr(wm.Dream, "step", spied)
    return actions


# --- the pictures: whole pixels, and z as bars --------------------------------------------------------

def test_upscale_keeps_every_pixel_a_whole_square():
    frame = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    big = tab.upscale(frame)
    assert big.shape == (256, 256, 3) and big.dtype == np.uint8
    assert np.array_equal(big, np.kron(frame, np.ones((4, 4, 1), np.uint8)))  # 4x4 copies, no blending
    observation = np.random.default_rng(1).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    assert np.array_equal(tab.upscale(observation, 288)[::3, ::3], observation)
    assert tab.upscale(observation, 288).shape == (288, 288, 3)
    assert tab.upscale(observation).shape == (192, 192, 3)  # 256 is not a multiple of 96: the whole factor below
    assert np.array_equal(tab.upscale(observation, 50), observation)  # never shrunk


def column_of(image: np.ndarray, i: int, bar: int = 8) -> np.ndarray:
    """Bar i's pixels, its one-pixel margins left out."""
    return image[:, i * bar + 1:(i + 1) * bar - 1]


def rows_coloured(column: np.ndarray, colour) -> list[int]:
    return [r for r in range(column.shape[0]) if (column[r] == colour).all()]


def test_z_bars_draw_blue_up_and_orange_down_from_the_zero_line_clipped_at_three():
    assert tab.BLUE == (0, 114, 178) and tab.ORANGE == (230, 159, 0)  # Okabe-Ito
    z = np.array([3.0, -3.0, 1.5, -1.5, 10.0, -10.0, 0.0, 0.2] + [0.0] * 24, np.float32)
    image = tab.z_bars(z)
    assert image.shape == (96, 32 * 8, 3) and image.dtype == np.uint8
    middle = 48
    assert (image[middle] == BLACK).all()  # the zero line, across every bar
    colours = {tuple(c) for c in image.reshape(-1, 3)}
    assert colours == {WHITE, BLACK, tab.BLUE, tab.ORANGE}
    # +3 fills the upper half (less a 2-pixel margin), -3 the lower one, below the zero line
    assert rows_coloured(column_of(image, 0), tab.BLUE) == list(range(2, middle))
    assert rows_coloured(column_of(image, 0), tab.ORANGE) == []
    assert rows_coloured(column_of(image, 1), tab.ORANGE) == list(range(middle + 1, 96 - 2))
    assert rows_coloured(column_of(image, 1), tab.BLUE) == []
    # half the limit: half the height (46 * 0.5 = 23 rows)
    assert rows_coloured(column_of(image, 2), tab.BLUE) == list(range(middle - 23, middle))
    assert rows_coloured(column_of(image, 3), tab.ORANGE) == list(range(middle + 1, middle + 23))
    # beyond +-3: clipped, the same bar as +-3
    assert np.array_equal(column_of(image, 4), column_of(image, 0))
    assert np.array_equal(column_of(image, 5), column_of(image, 1))
    assert {tuple(c) for c in column_of(image, 6).reshape(-1, 3)} == {WHITE, BLACK}  # 0: no bar
    assert rows_coloured(column_of(image, 7), tab.BLUE) == list(range(middle - 3, middle))  # round(0.2 / 3 * 46) = 3
    for i in range(32):  # a white pixel either side of every bar
        for x in (i * 8, i * 8 + 7):
            assert {tuple(c) for c in image[:, x]} == {WHITE, BLACK}, (i, x)


def test_z_bars_take_any_length_height_bar_width_and_a_list():
    image = tab.z_bars([1.0, -1.0, 0.0, 2.0, -2.0], height=40, bar=4)
    assert image.shape == (40, 20, 3)
    assert rows_coloured(image[:, 1:3], tab.BLUE) == list(range(20 - 6, 20))  # round(1 / 3 * 18) = 6
    assert rows_coloured(image[:, 5:7], tab.ORANGE) == list(range(21, 20 + 6))
    assert np.array_equal(tab.z_bars(torch.ones(32)), tab.z_bars(np.ones(32)))  # a tensor, as the dream hands it


# --- the tab and its page ---------------------------------------------------------------------------

def test_without_v_and_m_the_tab_says_how_to_train_them_and_offers_nothing_to_click(tmp_path, monkeypatch):
    import core.registry

    monkeypatch.setattr(core.registry, "CHECKPOINT_DIR", tmp_path)  # nothing shipped
    assert not tab._ready() and tab._controllers() == [(tab.CONTROLLERS["noisy"], "noisy")]
    with gr.Blocks() as demo:
        tab.build()
    texts = [block.value for block in demo.blocks.values() if isinstance(block, gr.Markdown) and block.value]
    assert any("Not ready" in text and "--stage rollouts" in text and "--stage controller" in text for text in texts)
    assert not list(demo.fns.values())


def test_building_the_tab_imports_neither_torch_nor_matplotlib():
    # Building the page must not pay for torch (app start-up is budgeted at 5 s).
    code = ("import sys, gradio as gr\nfrom tabs import world_models as tab\nwith gr.Blocks():\n    tab.build()\n"
            "print(sorted(m for m in ('torch', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_the_tab_builds_its_three_parts_with_named_events(models):
    with gr.Blocks() as demo:
        tab.build()
    ids = {block.elem_id for block in demo.blocks.values()}
    assert {"wm-driver", "wm-drive", "wm-stop", "wm-seen", "wm-remade", "wm-z", "wm-status", "wm-tau",
            "wm-dream-start", "wm-left", "wm-gas", "wm-right", "wm-brake", "wm-coast", "wm-dream-drive", "wm-dream",
            "wm-mixture", "wm-dream-status", "wm-compare", "wm-strip", "wm-errors", "wm-step-mixture"} <= ids
    names = {fn.api_name for fn in demo.fns.values()}
    assert {"world_models_drive", "world_models_dream_start", "world_models_dream_press", "world_models_dream_drive",
            "world_models_compare", "world_models_mixture"} <= names
    buttons = [block for block in demo.blocks.values() if isinstance(block, gr.Button)]
    assert set(tab.BUTTONS) <= {button.value for button in buttons}  # a press sends its label: the action's key
    driver = next(block for block in demo.blocks.values() if getattr(block, "elem_id", None) == "wm-driver")
    assert [key for _, key in driver.choices] == [key for _, key in tab._controllers()]
    assert driver.value == tab._controllers()[0][1]
    # the dream start slider offers exactly the starts M keeps
    starts = next(block for block in demo.blocks.values()
                  if isinstance(block, gr.Slider) and str(block.label).startswith("start from real frame"))
    assert starts.maximum == len(wm.dream_starts()) and starts.minimum == 1
    # The code beside the picture is the lesson's (app.py shows it under the tab, from tabs.classroom.explanations).
    with gr.Blocks() as explained:
        explanations(tab.LESSON)
    codes = [block.value for block in explained.blocks.values() if isinstance(block, gr.Code)]
    assert any("def dream_step" in code and "def sample_mixture" in code and "def mixture_log_prob" in code
               for code in codes)
    assert any("def forward" in code and "def squash" in code for code in codes)


def test_a_link_or_try_button_sets_the_driver_track_and_steps_and_drives(models):
    from tabs.classroom import widget_value

    with gr.Blocks() as demo:
        page = tab.build()
    assert page.lesson is tab.LESSON and set(page.settings) == {"driver", "track", "steps"}
    for example in tab.LESSON.try_this:  # every setting is a valid value of its widget
        for name, value in example.settings.items():
            assert widget_value(page.settings[name], str(value)) == (value, None), (example.label, name)
    drive = next(fn for fn in demo.fns.values() if fn.api_name == "world_models_drive")
    assert (page.ran._id, "change") in {(block, event) for block, event in drive.targets}


def test_the_press_endpoint_takes_the_button_as_the_readme_says(models):
    # A Button is no API parameter: the public press endpoint takes the button's label from a hidden dropdown.
    with gr.Blocks() as demo:
        tab.build()
    parameters = demo.get_api_info()["named_endpoints"]["/world_models_dream_press"]["parameters"]
    assert [p["parameter_name"] for p in parameters] == ["label", "tau"]


def test_without_controllers_the_noisy_policy_drives_and_compare_has_no_trained_driver(models, monkeypatch):
    monkeypatch.setattr(tab, "list_shipped", lambda technique: ["rnn", "vae"])
    assert tab._controllers() == [(tab.CONTROLLERS["noisy"], "noisy")]
    with gr.Blocks() as demo:
        tab.build()
    dropdowns = [block for block in demo.blocks.values() if isinstance(block, gr.Dropdown)
                 and block.label != "button"]  # the press endpoint's hidden button name
    assert dropdowns and all(block.value == "noisy" for block in dropdowns)
    for key in ("real", "dream"):
        assert "is shipped yet" in refusal(tab.drive_real, key, 1, STEPS)


# --- Real: the drive, streamed ----------------------------------------------------------------------

def test_a_real_drive_streams_each_step_and_ends_finished_with_the_episodes_return(car, monkeypatch):
    vae, _ = car
    monkeypatch.setattr(tab, "STREAM_EVERY_S", 0.0)  # every step sent: each can be checked
    updates = list(tab.drive_real("noisy", 3, STEPS))
    assert len(updates) == STEPS
    for k, (seen, remade, bars, status) in enumerate(updates, 1):
        assert seen.shape == (288, 288, 3) and remade.shape == (256, 256, 3) and bars.shape == (96, 256, 3)
        assert all(picture.dtype == np.uint8 for picture in (seen, remade, bars))
        assert status.startswith(f"Track 3, {tab.CONTROLLERS['noisy']}: step {k} of {STEPS}, return **"), status
        assert ("Finished" in status) == (k == STEPS), status
    # what the car saw and what V made of it, step for step the noisy driver's own episode on track 3
    observations, total = noisy_episode(3, STEPS)
    assert f"return **{total:.1f}**" in updates[-1][3]
    for k in (0, STEPS // 2, STEPS - 1):
        assert np.array_equal(updates[k][0], tab.upscale(observations[k], 288)), k
        mu, _ = wm.encode(vae, wm.frame_of(observations[k])[None])
        assert np.array_equal(updates[k][1], tab.upscale(wm.decode(vae, mu)[0])), k
        assert np.array_equal(updates[k][2], tab.z_bars(mu[0].numpy())), k
    assert len({update[0].tobytes() for update in updates}) > STEPS // 2  # the picture moves


def test_the_noisy_driver_is_the_same_on_the_same_track_and_another_on_another(car):
    final = {track: list(tab.drive_real("noisy", track, STEPS))[-1] for track in (3, 4)}
    again = list(tab.drive_real("noisy", 3, STEPS))[-1]
    assert again[3] == final[3][3] and np.array_equal(again[0], final[3][0])
    assert not np.array_equal(final[3][0], final[4][0])


@pytest.mark.parametrize("key", ["real", "dream"])
def test_a_controllers_drive_returns_what_core_says_it_scores(car, key):
    needs_controller(key)
    vae, rnn = car
    steps = 60
    status = list(tab.drive_real(key, 5, steps))[-1][3]
    expected = wm.real_returns(vae, rnn, wm.load_controller(key), [5], steps)[0]
    assert f"return **{expected:.1f}**" in status and "Finished" in status
    assert status.startswith(f"Track 5, the controller {tab.CONTROLLERS[key]}: step {steps} of {steps}"), status
    assert expected == pytest.approx(wm.episode_return(vae, rnn, wm.load_controller(key), 5, steps), abs=0.05)


def test_the_drive_is_sent_at_most_every_stream_interval(car):
    steps = 100
    start = time.monotonic()
    updates = list(tab.drive_real("noisy", 6, steps))
    elapsed = time.monotonic() - start
    assert 1 <= len(updates) <= elapsed / tab.STREAM_EVERY_S + 2 and len(updates) < steps
    assert "Finished" in updates[-1][3] and f"step {steps} of {steps}" in updates[-1][3]


@pytest.mark.parametrize("track, shown", [(-1, MAX_SEED), (None, 0), (NAN, 0), (2.7, 2), ("seven", 0),
                                          (2**80, 2**80 % (MAX_SEED + 1))])
def test_any_number_is_a_track(car, track, shown):
    first = next(tab.drive_real("noisy", track, 1))
    assert first[3].startswith(f"Track {shown}, ") and "step 1 of 1" in first[3], first[3]


@pytest.mark.parametrize("steps, shown", [(0, 1), (-5, 1), (2.7, 2), (None, 1000), (NAN, 1000), (INF, 1000),
                                          (1e12, 1000), ("ten", 1000), (1000, 1000)])
def test_steps_are_clamped_to_the_environments_thousand(car, steps, shown):
    drive = tab.drive_real("noisy", 1, steps)
    first = next(drive)
    drive.close()  # the first update says how long the episode will be
    assert f"step 1 of {shown}," in first[3], first[3]
    if shown <= 2:  # short enough to drive to the end
        last = list(tab.drive_real("noisy", 1, steps))[-1][3]
        assert "Finished" in last and f"step {shown} of {shown}," in last, last


@pytest.mark.parametrize("choice", ["turbo", None, "", 3, "Noisy"])
def test_an_unknown_driver_is_a_sentence(models, choice):
    assert "Unknown driver" in refusal(tab.drive_real, choice, 1, STEPS)


def test_an_environment_that_fails_to_start_is_a_sentence(models, monkeypatch):
    monkeypatch.setitem(sys.modules, "gymnasium", None)  # `import gymnasium` now raises ImportError
    message = refusal(tab.drive_real, "noisy", 1, STEPS)
    assert "CarRacing environment could not start" in message and "gymnasium[box2d]" in message


# --- Dream: buttons and drivers --------------------------------------------------------------------

def test_a_dream_starts_from_a_kept_real_frame(models):
    vae, _ = models
    starts = wm.dream_starts()
    dream, frame, bars, mixture, status = tab.start_dream(2, 0, 1.0)
    assert isinstance(dream, wm.Dream) and dream.t == 0 and dream.total == 0.0 and dream.label == "Dream 2"
    assert torch.equal(dream.z[0], starts[1].float())
    assert frame.shape == (256, 256, 3) and np.array_equal(frame, tab.upscale(wm.decode(vae, starts[1:2].float())[0]))
    assert np.array_equal(bars, tab.z_bars(starts[1].float()))
    assert mixture is None and status.startswith("Dream 2 started from a real frame")
    assert not np.array_equal(frame, tab.start_dream(1, 0, 1.0)[1])  # another rollout, another frame


@pytest.mark.parametrize("start, label", [(0, "Dream 1"), (-3, "Dream 1"), (NAN, "Dream 1"), (None, "Dream 1"),
                                          (1.9, "Dream 1"), ("two", "Dream 1"), (1e12, "last"), (INF, "last")])
def test_the_dream_start_is_clamped_to_the_kept_frames(models, start, label):
    label = f"Dream {len(wm.dream_starts())}" if label == "last" else label
    assert tab.start_dream(start, 0, 1.0)[0].label == label


def test_a_press_dreams_frames_per_press_frames_with_its_buttons_action(models, monkeypatch):
    vae, _ = models
    actions = spy_on_dream_actions(monkeypatch)
    dream = tab.start_dream(1, 3, 1.0)[0]
    updates = list(tab.press("▲ gas", 1.0, dream))
    assert len(updates) == tab.FRAMES_PER_PRESS == 8 and dream.t == tab.FRAMES_PER_PRESS
    assert all(update[0] is dream for update in updates)
    gas = np.float32(tab.BUTTONS["▲ gas"])
    assert len(actions) == tab.FRAMES_PER_PRESS and all(np.array_equal(a, gas) for a in actions)
    for k, (_, frame, bars, mixture, status) in enumerate(updates, 1):
        assert frame.shape == (256, 256, 3) and bars.shape == (96, 256, 3)
        assert status.startswith(f"Dream 1, step {k}: “▲ gas” at temperature 1. M expects reward "), status
        assert (mixture == gr.skip()) == (k < len(updates))  # the mixture is drawn once, for the last frame
    last = updates[-1]
    assert isinstance(last[3], Image.Image) and min(last[3].size) > 100
    assert np.asarray(last[3].convert("L")).std() > 5
    assert np.array_equal(last[1], tab.upscale(wm.decode(vae, dream.z)[0]))  # the frame is V's decoding of M's z
    assert np.array_equal(last[2], tab.z_bars(dream.z[0]))
    assert f"dreamed return so far **{dream.total:.1f}**" in last[4]
    assert len({frame.tobytes() for frame in frames_of(updates)}) > 1  # the dream moves
    actions.clear()
    for label in tab.BUTTONS:  # every button drives its own action
        list(tab.press(label, 1.0, dream))
        assert len(actions) == tab.FRAMES_PER_PRESS, label
        assert all(np.array_equal(a, np.float32(tab.BUTTONS[label])) for a in actions), (label, actions)
        actions.clear()
    assert dream.t == tab.FRAMES_PER_PRESS * (1 + len(tab.BUTTONS))


def dreamed(seed, tau, labels=("▲ gas", "◀ left"), start=1):
    dream = tab.start_dream(start, seed, tau)[0]
    return dream, [frame for label in labels for frame in frames_of(tab.press(label, tau, dream))]


def test_the_same_start_seed_and_presses_dream_the_same_frames(models):
    _, first = dreamed(7, 1.0)
    _, again = dreamed(7, 1.0)
    assert len(first) == 2 * tab.FRAMES_PER_PRESS
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    _, other = dreamed(8, 1.0)
    assert not all(np.array_equal(a, b) for a, b in zip(first, other))  # another seed, another dream at tau 1
    _, calm = dreamed(7, 0.0)
    _, calm_other = dreamed(8, 0.0)
    assert all(np.array_equal(a, b) for a, b in zip(calm, calm_other))  # tau 0: no randomness left
    _, turned = dreamed(7, 0.0, labels=("▲ gas", "▶ right"))
    assert not np.array_equal(calm[-1], turned[-1])  # other actions, another dream


@pytest.mark.parametrize("tau, shown, same_as", [(NAN, "1", 1.0), (None, "1", 1.0), ("hot", "1", 1.0),
                                                 (-2, "0", 0.0), (-INF, "0", 0.0), (100, "3", 3.0),
                                                 (INF, "3", 3.0), (0.5, "0.5", 0.5)])
def test_a_temperature_out_of_range_is_clamped(models, tau, shown, same_as):
    dream = tab.start_dream(1, 4, tau)[0]
    updates = list(tab.press("coast", tau, dream))
    assert f"at temperature {shown}. " in updates[-1][4], updates[-1][4]
    _, expected = dreamed(4, same_as, labels=("coast",))
    assert all(np.array_equal(a, b) for a, b in zip(frames_of(updates), expected))


def test_a_press_before_a_dream_or_of_an_unknown_button_is_a_sentence(models):
    assert refusal(tab.press, "▲ gas", 1.0, None) == "Start a dream first."
    dream = tab.start_dream(1, 0, 1.0)[0]
    for label in ("jump", None, "", "gas", 3):
        assert "Unknown button" in refusal(tab.press, label, 1.0, dream), label
    assert dream.t == 0  # nothing was dreamed


def test_two_dreams_from_the_same_start_are_independent(models):
    starts_before = wm.dream_starts().clone()
    one, two = tab.start_dream(1, 5, 1.0)[0], tab.start_dream(1, 5, 1.0)[0]
    assert one.generator is not two.generator and one.state[0] is not two.state[0]
    z_two, h_two = two.z.clone(), two.h.clone()
    solo = [frames_of(tab.press(label, 1.0, one)) for label in ("▲ gas", "▶ right")]
    assert torch.equal(two.z, z_two) and torch.equal(two.h, h_two) and two.t == 0  # one's dream left two alone
    assert torch.equal(wm.dream_starts(), starts_before)  # and the kept starts too
    # two, pressed the same way afterwards, dreams what one dreamed: one's presses did not use up its randomness
    later = [frames_of(tab.press(label, 1.0, two)) for label in ("▲ gas", "▶ right")]
    assert all(np.array_equal(a, b) for x, y in zip(solo, later) for a, b in zip(x, y))
    # interleaved with another user's dream (another seed), a dream is what it is alone
    three, four = tab.start_dream(1, 5, 1.0)[0], tab.start_dream(1, 6, 1.0)[0]
    mixed = []
    for label in ("▲ gas", "▶ right"):
        mixed.append(frames_of(tab.press(label, 1.0, three)))
        list(tab.press("◀ left", 1.0, four))
    assert all(np.array_equal(a, b) for x, y in zip(solo, mixed) for a, b in zip(x, y))


def test_the_noisy_driver_dreams_the_asked_frames_and_ends_with_the_mixture(models, monkeypatch):
    actions = spy_on_dream_actions(monkeypatch)
    dream = tab.start_dream(1, 2, 1.0)[0]
    list(tab.press("▲ gas", 1.0, dream))
    actions.clear()
    updates = list(tab.let_controller_dream("noisy", 1.0, 5, dream))
    assert len(updates) == 5 and dream.t == tab.FRAMES_PER_PRESS + 5
    assert all(update[3] == gr.skip() for update in updates[:-1]) and isinstance(updates[-1][3], Image.Image)
    policy = wm.NoisyPolicy(tab.FRAMES_PER_PRESS)  # seeded with the dream's step when it takes over
    assert all(np.array_equal(a, policy()) for a in actions)
    assert f"step {dream.t}: {tab.CONTROLLERS['noisy']} at temperature 1." in updates[-1][4]


@pytest.mark.parametrize("frames, dreamed_frames", [(0, 1), (-4, 1), (2.6, 2), (3, 3)])
def test_the_dream_drivers_frames_are_clamped(models, frames, dreamed_frames):
    dream = tab.start_dream(1, 0, 1.0)[0]
    assert len(list(tab.let_controller_dream("noisy", 1.0, frames, dream))) == dreamed_frames == dream.t


def test_the_dream_drivers_frames_default_to_200_and_stop_at_600(models, monkeypatch):
    monkeypatch.setattr(wm, "decode", lambda vae, z: np.zeros((len(z), 64, 64, 3), np.uint8))  # M alone: fast
    for frames, count in ((NAN, 200), (None, 200), ("many", 200), (1e12, tab.MAX_DREAM_STEPS),
                          (INF, tab.MAX_DREAM_STEPS)):
        dream = tab.start_dream(1, 0, 1.0)[0]
        assert len(list(tab.let_controller_dream("noisy", 0.0, frames, dream))) == count == dream.t, frames


@pytest.mark.parametrize("key", ["real", "dream"])
def test_a_controller_dreams_with_its_own_actions(models, monkeypatch, key):
    needs_controller(key)
    controller = wm.load_controller(key)
    dream = tab.start_dream(1, 0, 1.0)[0]
    seen = []
    step = wm.Dream.step

    def spied(self, action, tau):  # what the controller makes of [z, h] just before each step
        with torch.no_grad():
            seen.append((controller(self.z, self.h)[0].numpy(), np.asarray(action)))
        return step(self, action, tau)

    monkeypatch.setattr(wm.Dream, "step", spied)
    updates = list(tab.let_controller_dream(key, 1.15, 6, dream))
    assert len(updates) == 6 and dream.t == 6 and len(seen) == 6
    assert all(np.allclose(expected, given, atol=1e-6) for expected, given in seen)
    assert f"the controller {tab.CONTROLLERS[key]} at temperature 1.15" in updates[-1][4]


def test_letting_a_driver_dream_before_a_dream_or_an_unknown_driver_is_a_sentence(models):
    assert refusal(tab.let_controller_dream, "noisy", 1.0, 5, None) == "Start a dream first."
    dream = tab.start_dream(1, 0, 1.0)[0]
    for choice in ("turbo", None, ""):
        assert "Unknown driver" in refusal(tab.let_controller_dream, choice, 1.0, 5, dream)
    assert dream.t == 0


def test_a_dream_driver_leaves_gradients_on_in_the_servers_threads(models):
    # Grad mode is per thread, and Gradio resumes a streaming handler on any worker thread: a no_grad
    # held across a yield would leave a worker with gradients off for the next job (DeepDream, style).
    dream = tab.start_dream(1, 0, 1.0)[0]
    drive = tab.let_controller_dream("noisy", 1.0, 3, dream)
    with ThreadPoolExecutor(1) as worker:
        worker.submit(next, drive).result()  # the first frame, made in a worker thread as Gradio does
        assert worker.submit(torch.is_grad_enabled).result(), "the worker has gradients off after the first frame"
        list(drive)  # the rest, made elsewhere
        assert worker.submit(torch.is_grad_enabled).result()
    assert torch.is_grad_enabled()


# --- Why it works: the dream against reality -----------------------------------------------------------

@pytest.fixture(scope="module")
def compared():
    """The real-trained controller on track 2 for 60 steps, its dream from step 50 at tau 1, seed 0."""
    needs_controller("real")
    needs_car()
    return tab.compare("real", 2, 60, 1.0, 0)


def test_compare_sets_the_dream_beside_the_real_frames(models, compared):
    vae, _ = models
    state, strip, errors, position, note = compared
    check = state["check"]
    assert state["tau"] == 1.0 and check.start == wm.DREAM_START and len(check.real_z) == 60
    assert note == (f"Track 2, the controller {tab.CONTROLLERS['real']}, 60 steps. From step {wm.DREAM_START} M "
                    f"dreams on alone at temperature 1, fed the same actions the real car took.")
    assert position == gr.update(maximum=59, value=wm.DREAM_START + 1)
    # eight columns from the dream's start to the end: real frames on top, the dream (decoded by V) below
    k = strip.shape[1] // (8 * 64)
    assert strip.shape == (k * (64 + 4 + 64), k * 8 * 64, 3) and strip.dtype == np.uint8
    picks = np.linspace(wm.DREAM_START, 59, 8).round().astype(int)
    dream_frames = wm.decode(vae, check.dream_z)
    top = np.concatenate([check.real_frames[t] for t in picks], 1)
    bottom = np.concatenate([dream_frames[t] for t in picks], 1)
    assert np.array_equal(strip[::k, ::k][:64], top) and np.array_equal(strip[::k, ::k][68:], bottom)
    assert (strip[::k, ::k][64:68] == 255).all()  # a white gap between them
    assert isinstance(errors, Image.Image) and errors.size == (720, 252)
    assert np.asarray(errors.convert("L")).std() > 5
    # The filmstrip (two 64-px rows and a gap) is shown at twice its size.
    assert k == 2


def test_compare_is_the_same_for_the_same_track_and_seed(compared):
    again = tab.compare("real", 2, 60, 1.0, 0)
    assert np.array_equal(again[1], compared[1]) and again[4] == compared[4]
    other = tab.compare("real", 2, 60, 1.0, 1)  # another dream seed: the same real frames, another dream
    assert torch.equal(other[0]["check"].real_z, compared[0]["check"].real_z)
    assert not torch.equal(other[0]["check"].dream_z, compared[0]["check"].dream_z)


def test_compare_with_the_noisy_driver_or_an_unknown_one_is_a_sentence(models):
    assert "Pick a trained controller" in refusal(tab.compare, "noisy", 2, 60, 1.0, 0)
    for choice in ("turbo", None):
        assert "Unknown driver" in refusal(tab.compare, choice, 2, 60, 1.0, 0)


@pytest.mark.parametrize("steps, length", [(0, 60), (-10, 60), (59.9, 60), (NAN, 150), (1e12, 300)])
def test_compare_steps_are_clamped(compared, steps, length):
    state, strip, _, position, note = tab.compare("real", 2, steps, 1.0, 0)
    driven = len(state["check"].real_z)
    if driven < length:  # only where the car left the playfield before: then the episode really ended there
        vae, rnn = wm.load_vae(), wm.load_rnn()
        record = list(wm.drive(vae, rnn, wm.load_controller("real"), 2, length, reconstruct=False))
        assert len(record) == driven and record[-1].done, (driven, length)
    else:
        assert driven == length
    assert position["maximum"] == driven - 1 and f", {driven} steps." in note


@pytest.mark.parametrize("tau, shown", [(NAN, 1.0), (-1, 0.0), (100, 3.0)])
def test_compare_temperature_is_clamped(compared, tau, shown):
    state, *_, note = tab.compare("real", 2, 60, tau, 0)
    assert state["tau"] == shown and f"at temperature {shown:g}," in note


def test_the_mixture_at_a_step_is_ms_prediction_from_the_real_past(compared, monkeypatch):
    state = compared[0]
    check = state["check"]
    drawn, figure = [], tab._mixture_figure

    def spied(mixture, sample, **kwargs):
        drawn.append((mixture, sample, kwargs))
        return figure(mixture, sample, **kwargs)

    monkeypatch.setattr(tab, "_mixture_figure", spied)
    pictures = {}
    for step, t in ((51, 51), (1, 1), (0, 1), (-5, 1), (NAN, 1), (None, 1), (59, 59), (1e12, 59), (INF, 59)):
        picture = tab.mixture_at(state, step)
        assert isinstance(picture, Image.Image) and np.asarray(picture.convert("L")).std() > 5
        mixture, _, kwargs = drawn[-1]
        assert all(torch.equal(m, p[t - 1]) for m, p in zip(mixture, check.predicted)), step  # M's p(z_t | real past)
        assert torch.equal(kwargs["actual"], check.real_z[t]) and kwargs["title"].startswith(f"Step {t}: "), step
        pictures.setdefault(t, []).append(np.asarray(picture))
    assert all(np.array_equal(p, same[0]) for same in pictures.values() for p in same)  # a step, one picture
    assert not np.array_equal(pictures[1][0], pictures[59][0])


def test_the_mixture_before_a_comparison_is_a_sentence(models):
    for state in (None, {}, {"tau": 1.0}):
        assert refusal(tab.mixture_at, state, 51) == "Compare the dream with reality first."


def test_the_tabs_copies_of_cores_constants_agree():
    # The tab repeats them so that building the page imports no torch.
    assert (tab.DREAM_START, tab.MAX_TEMPERATURE) == (wm.DREAM_START, wm.MAX_TEMPERATURE)
