"""Serial instrument drivers at the byte level: the scripted wire dialogue is the test (issue 7)."""

from __future__ import annotations

import asyncio
import math

import pytest
from serial_dialogue import ScriptedWire

from drivers.errors import DeviceTimeout, GarbledReply, SetpointOutOfRange
from drivers.interfaces import ClockStatus, FrequencyReference, PhaseActuator, PhaseActuatorConstraints
from drivers.mdt693b import MDT693B, MDT693BPhaseActuator
from drivers.prs10 import FS725, PRS10, PRS10StatusBytes
from drivers.serial_line import SerialLine, open_port

TIMEOUT_S = 0.02  # a missing reply costs this much wall time


def prs10(wire: ScriptedWire, retries: int = 2) -> PRS10:
    return PRS10(wire, name="rb-alice", timeout_s=TIMEOUT_S, retries=retries)


def mdt(wire: ScriptedWire, retries: int = 2) -> MDT693B:
    return MDT693B(wire, name="piezo-alice", timeout_s=TIMEOUT_S, retries=retries)


# --- the line ---------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_line_round_trip_over_a_real_pyserial_loop_url() -> None:
    line = SerialLine(open_port("loop://", baudrate=9600, timeout_s=0.5), device="loop", timeout_s=0.5)
    try:
        assert await line.exchange("ID?") == "ID?"  # loop:// returns what was written, terminator and all
    finally:
        line.close()


@pytest.mark.asyncio
async def test_line_never_interleaves_exchanges() -> None:
    wire = ScriptedWire([(b"A?\r", (b"", b"", b"a\r")), (b"B?\r", b"b\r")])  # the first reply is slow
    line = SerialLine(wire, device="dev", timeout_s=1.0)
    assert await asyncio.gather(line.exchange("A?"), line.exchange("B?")) == ["a", "b"]
    wire.assert_done()


@pytest.mark.asyncio
async def test_line_reassembles_a_reply_arriving_in_pieces() -> None:
    wire = ScriptedWire([(b"ST?\r", (b"0,0,", b"0,0,4", b",0\r"))])
    assert await SerialLine(wire, device="dev").exchange("ST?") == "0,0,0,0,4,0"
    wire.assert_done()


# --- PRS10 ------------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_prs10_identifies() -> None:
    wire = ScriptedWire([(b"ID?\r", b"PRS10_3.24_SN_19957\r")])
    assert await prs10(wire).identify() == "PRS10_3.24_SN_19957"
    wire.assert_done()


@pytest.mark.asyncio
async def test_prs10_status_reads_lock_and_steering() -> None:
    wire = ScriptedWire([(b"LO?\r", b"1\r"), (b"SF?\r", b"-245\r"), (b"LO?\r", b"0\r"), (b"SF?\r", b"0\r")])
    clock = prs10(wire)
    assert await clock.status() == ClockStatus(locked=True, frequency_offset_ppt=-245.0)
    assert await clock.status() == ClockStatus(locked=False, frequency_offset_ppt=0.0)
    wire.assert_done()


@pytest.mark.asyncio
async def test_prs10_steers_in_integer_ppt_steps() -> None:
    wire = ScriptedWire([(b"SF 120\r", b""), (b"SF 12\r", b""), (b"SF -13\r", b""), (b"SF -2000\r", b"")])
    clock = prs10(wire)
    for offset_ppt in (120.0, 12.4, -12.6, -2000.0):
        await clock.steer(offset_ppt)
    assert (await clock.constraints()).max_steer_ppt == 2000.0
    wire.assert_done()


@pytest.mark.asyncio
@pytest.mark.parametrize("offset_ppt", [2000.5, -2001.0])
async def test_prs10_refuses_out_of_range_steering_and_sends_nothing(offset_ppt: float) -> None:
    wire = ScriptedWire([])
    with pytest.raises(SetpointOutOfRange, match="rb-alice"):
        await prs10(wire).steer(offset_ppt)
    wire.assert_done()


@pytest.mark.asyncio
async def test_prs10_parses_the_six_status_bytes() -> None:
    wire = ScriptedWire([(b"ST?\r", b"0,0,0,0,4,96\r")])
    assert await prs10(wire).status_bytes() == PRS10StatusBytes(0, 0, 0, 0, 4, 96)
    wire.assert_done()


@pytest.mark.asyncio
async def test_prs10_reads_an_analog_test_point() -> None:
    wire = ScriptedWire([(b"AD10?\r", b"0.728\r")])
    assert await prs10(wire).analog_v(10) == pytest.approx(0.728)
    with pytest.raises(ValueError, match="analog channel 20"):
        await prs10(wire).analog_v(20)
    wire.assert_done()


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("command", "reply"),
    [(b"LO?\r", b"\x00?\r"), (b"LO?\r", b"2\r"), (b"ST?\r", b"0,0,4,0\r"), (b"ID?\r", b"\xff\xfe\r")],
)
async def test_prs10_garbled_reply_names_device_and_request(command: bytes, reply: bytes) -> None:
    wire = ScriptedWire([(command, reply)])
    clock = prs10(wire, retries=0)
    call = {b"LO?\r": clock.status, b"ST?\r": clock.status_bytes, b"ID?\r": clock.identify}[command]
    with pytest.raises(GarbledReply, match="rb-alice") as raised:
        await call()
    assert raised.value.request == command.decode().rstrip("\r")
    wire.assert_done()


@pytest.mark.asyncio
async def test_prs10_missing_reply_times_out_naming_device_and_request() -> None:
    wire = ScriptedWire([(b"LO?\r", b"")])
    with pytest.raises(DeviceTimeout, match=r"rb-alice: no reply to 'LO\?'") as raised:
        await prs10(wire, retries=0).status()
    assert raised.value.timeout_s == TIMEOUT_S
    wire.assert_done()


@pytest.mark.asyncio
async def test_prs10_partial_reply_is_garbled() -> None:
    wire = ScriptedWire([(b"SF?\r", b"-24")])
    with pytest.raises(GarbledReply, match="rb-alice"):
        await SerialLine(wire, device="rb-alice", timeout_s=TIMEOUT_S, retries=0).exchange("SF?")
    wire.assert_done()


@pytest.mark.asyncio
async def test_prs10_query_is_retried_after_a_timeout() -> None:
    wire = ScriptedWire([(b"LO?\r", b""), (b"LO?\r", b"1\r"), (b"SF?\r", b"7\r")])
    assert await prs10(wire, retries=1).status() == ClockStatus(locked=True, frequency_offset_ppt=7.0)
    wire.assert_done()


@pytest.mark.asyncio
async def test_prs10_and_fs725_serve_the_frequency_reference_role() -> None:
    wire = ScriptedWire([(b"SN?\r", b"")])  # never written: the check is structural
    for clock in (PRS10(wire, name="rb-alice"), FS725(wire, name="rb-bob")):
        assert isinstance(clock, FrequencyReference)


@pytest.mark.asyncio
async def test_fs725_speaks_the_prs10_dialogue() -> None:
    wire = ScriptedWire([(b"LO?\r", b"1\r"), (b"SF?\r", b"3\r"), (b"SF 4\r", b"")])
    clock = FS725(wire, name="rb-bob", timeout_s=TIMEOUT_S)
    assert (await clock.status()).locked
    await clock.steer(4.0)
    wire.assert_done()


# --- MDT693B ----------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_mdt693b_identifies_from_its_multiline_answer() -> None:
    wire = ScriptedWire([(b"id?\r", b"\r\r\rModel MDT693B Piezo Control Module\rFirmware Version: 1.05\r>")])
    assert await mdt(wire).identify() == "Model MDT693B Piezo Control Module; Firmware Version: 1.05"
    wire.assert_done()


@pytest.mark.asyncio
async def test_mdt693b_sets_and_reads_axis_voltage_and_limit() -> None:
    wire = ScriptedWire([
        (b"xvoltage=24.680\r", b">"),
        (b"xvoltage?\r", b"[  24.8]\r>"),
        (b"zvoltage?\r", b"[   1.4]\r>"),
        (b"vlimit?\r", b"[ 100]\r>"),
    ])
    piezo = mdt(wire)
    await piezo.set_axis_voltage("x", 24.68)
    assert await piezo.axis_voltage_v("x") == 24.8
    assert await piezo.axis_voltage_v("z") == 1.4
    assert await piezo.voltage_limit_v() == 100.0
    wire.assert_done()


@pytest.mark.asyncio
async def test_mdt693b_strips_the_echo_and_turns_it_off() -> None:
    wire = ScriptedWire([
        (b"xvoltage?\r", b"xvoltage?\r[  24.8]\r>"),
        (b"xvoltage=1.000\r", b"xvoltage=1.000\r>"),
        (b"echo=0\r", b"echo=0\r>"),
        (b"echo=1\r", b">"),
    ])
    piezo = mdt(wire)
    assert await piezo.axis_voltage_v("x") == 24.8
    await piezo.set_axis_voltage("x", 1.0)
    await piezo.set_echo(False)
    await piezo.set_echo(True)
    wire.assert_done()


@pytest.mark.asyncio
async def test_mdt693b_drops_a_stale_prompt_before_a_query() -> None:
    wire = ScriptedWire([(b"vlimit?\r", b"[ 150]\r>")], pending=b">")
    assert await mdt(wire).voltage_limit_v() == 150.0
    wire.assert_done()


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("command", "reply"),
    [(b"xvoltage?\r", b"CMD_NOT_DEFINED>"), (b"xvoltage?\r", b"[ 2#.4]\r>"), (b"vlimit?\r", b"[ 1]\r>")],
)
async def test_mdt693b_garbled_reply_names_device_and_request(command: bytes, reply: bytes) -> None:
    wire = ScriptedWire([(command, reply)])
    piezo = mdt(wire, retries=0)
    call = piezo.voltage_limit_v() if command == b"vlimit?\r" else piezo.axis_voltage_v("x")
    with pytest.raises(GarbledReply, match="piezo-alice") as raised:
        await call
    assert raised.value.request == command.decode().rstrip("\r")
    wire.assert_done()


@pytest.mark.asyncio
async def test_mdt693b_refused_set_is_garbled() -> None:
    wire = ScriptedWire([(b"yvoltage=3.000\r", b"CMD_NOT_DEFINED>")])
    with pytest.raises(GarbledReply, match=r"yvoltage=3\.000"):
        await mdt(wire).set_axis_voltage("y", 3.0)
    wire.assert_done()


@pytest.mark.asyncio
async def test_mdt693b_setpoint_without_prompt_times_out_and_is_not_retried() -> None:
    wire = ScriptedWire([(b"xvoltage=5.000\r", b"")])
    with pytest.raises(DeviceTimeout, match="piezo-alice"):
        await mdt(wire, retries=3).set_axis_voltage("x", 5.0)
    wire.assert_done()  # one write only: a set command is never repeated


@pytest.mark.asyncio
async def test_mdt693b_query_is_retried_after_a_timeout() -> None:
    wire = ScriptedWire([(b"xvoltage?\r", b""), (b"xvoltage?\r", b"[  10.0]\r>")])
    assert await mdt(wire, retries=1).axis_voltage_v("x") == 10.0
    wire.assert_done()


@pytest.mark.asyncio
async def test_phase_actuator_takes_its_range_from_vlimit() -> None:
    wire = ScriptedWire([(b"vlimit?\r", b"[ 150]\r>"), (b"yvoltage=42.500\r", b">")])
    actuator = MDT693BPhaseActuator(mdt(wire), axis="y")
    assert isinstance(actuator, PhaseActuator)
    assert await actuator.constraints() == PhaseActuatorConstraints(0.0, 150.0)
    await actuator.set_voltage(42.5)  # the limit is cached: no second vlimit?
    wire.assert_done()


@pytest.mark.asyncio
@pytest.mark.parametrize("voltage_v", [75.1, -0.5])
async def test_phase_actuator_refuses_out_of_range_and_sends_no_setpoint(voltage_v: float) -> None:
    wire = ScriptedWire([(b"vlimit?\r", b"[ 75]\r>")])
    with pytest.raises(SetpointOutOfRange, match="piezo-alice: voltage_v"):
        await MDT693BPhaseActuator(mdt(wire)).set_voltage(voltage_v)
    wire.assert_done()


@pytest.mark.asyncio
async def test_phase_actuator_status_with_and_without_a_temperature_source() -> None:
    wire = ScriptedWire([(b"xvoltage?\r", b"[  12.3]\r>"), (b"xvoltage?\r", b"[  12.3]\r>")])
    controller = mdt(wire)

    async def housing_c() -> float:
        return 21.5

    with_sensor = await MDT693BPhaseActuator(controller, temperature_source=housing_c).status()
    assert (with_sensor.voltage_v, with_sensor.temperature_c) == (12.3, 21.5)
    assert math.isnan((await MDT693BPhaseActuator(controller).status()).temperature_c)
    wire.assert_done()


def test_drivers_close_their_port() -> None:
    wire = ScriptedWire([])
    PRS10(wire, name="rb-alice").close()
    assert wire.closed
