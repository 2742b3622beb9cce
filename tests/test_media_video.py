"""H.264 for conferencing: one frame in one out, keyframes on request with SPS/PPS, bitrate, decoding."""
from __future__ import annotations

import pytest

from client.media.sources import TestPatternSource, read_barcode
from client.media.video_codec import (CAMERA_HD, CAMERA_VGA, DecodeError, H264Decoder, H264Encoder, VideoProfile,
                                      is_idr_with_parameter_sets, screen_profile)


def encode_run(profile: VideoProfile, frames: int, keyframe_at: tuple[int, ...] = ()) -> list:
    source = TestPatternSource(profile.width, profile.height, profile.fps)
    encoder = H264Encoder(profile)
    units = []
    for index in range(frames):
        if index in keyframe_at:
            encoder.request_keyframe()
        out = encoder.encode(source.read().image)
        assert len(out) == 1, f"zerolatency must give one access unit per frame (frame {index})"
        units.append(out[0])
    return units


def test_first_frame_and_requested_frames_are_idr_with_parameter_sets():
    units = encode_run(CAMERA_VGA, 60, keyframe_at=(25, 50))
    keyframes = [i for i, unit in enumerate(units) if unit.keyframe]
    assert keyframes == [0, 25, 50], "no keyframes except the first and the requested ones (no scene cuts)"
    for index in keyframes:
        assert is_idr_with_parameter_sets(units[index].payload), "SPS/PPS must be repeated in every keyframe"
    assert not is_idr_with_parameter_sets(units[10].payload)


def test_a_later_keyframe_alone_starts_a_fresh_decoder():
    units = encode_run(CAMERA_VGA, 40, keyframe_at=(30,))
    late = H264Decoder()
    with pytest.raises(DecodeError):
        for unit in units[10:30]:                # P-frames without their reference
            if late.decode(unit.payload):
                break
        else:
            raise DecodeError("nothing decoded")
    fresh = H264Decoder()
    decoded = [fresh.decode(unit.payload) for unit in units[30:]]
    assert all(len(frames) == 1 for frames in decoded), "decoding starts at the keyframe, no frame delay"
    assert read_barcode(decoded[0][0].to_ndarray(format="bgr24")) == 30


def test_bitrate_is_respected_over_two_seconds():
    profile = VideoProfile(640, 480, 30.0, 500_000)
    units = encode_run(profile, 60)
    bits = sum(len(unit.payload) for unit in units[1:]) * 8
    assert bits / 2.0 < 500_000 * 1.5
    low = encode_run(VideoProfile(640, 480, 30.0, 150_000), 60)
    assert sum(len(u.payload) for u in low[1:]) < sum(len(u.payload) for u in units[1:])


def test_hd_and_screen_profiles():
    assert (CAMERA_HD.width, CAMERA_HD.height) == (1280, 720)
    hd = encode_run(CAMERA_HD, 3)
    (frame,) = H264Decoder().decode(hd[0].payload)
    assert (frame.width, frame.height) == (1280, 720)
    screen = screen_profile(1920, 1080)
    assert screen.fps < CAMERA_VGA.fps and screen.width == 1920
    units = encode_run(screen, 2)
    (frame,) = H264Decoder().decode(units[0].payload)
    assert (frame.width, frame.height) == (1920, 1080)


def test_odd_sizes_are_refused():
    with pytest.raises(ValueError):
        H264Encoder(VideoProfile(641, 480, 30.0, 500_000))


def test_garbage_raises_decode_error():
    decoder = H264Decoder()
    with pytest.raises(DecodeError):
        for _ in range(3):
            decoder.decode(b"\x00\x00\x00\x01\x65" + bytes(range(256)) * 4)
