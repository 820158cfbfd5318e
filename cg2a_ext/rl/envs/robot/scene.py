"""MJCF of the robot scenes: an xArm7 over a table, for Reach and PegInBox.

A re-creation on today's MuJoCo (official ``mujoco`` bindings) of the scenes
used by the published xArm7 tasks (Look Closer / SGQN). The arm is built from
primitive geoms (capsules, cylinders, boxes) on the xArm7's public kinematic
chain (link offsets d1=0.267, d3=0.293, a3=0.0525, a4=0.0775, d5=0.3425,
a6=0.076, d7=0.097 m); it is not the published meshes, so images differ from
the papers' even where numbers (table, camera, lights, workspace) match.

The end effector follows a mocap body through a weld equality; the gripper
points down (quaternion (0, 1, 0, 0)). Arm geoms are visual only: contacts
exist between the table, the PegInBox box and the peg with its chain.
"""
from __future__ import annotations

import numpy as np

__all__ = [
    "GRIPPER_QUAT", "GRASP_OFFSET", "MODE_COLORS", "TIMESTEPS", "N_SUBSTEPS", "TABLE_TOP",
    "BOX_TO_GOAL", "scene_xml", "texture_asset_name",
]

GRIPPER_QUAT = np.array([0.0, 1.0, 0.0, 0.0])
# The grasp site is 0.16 m along link7's z; with the gripper pointing down it
# sits this far below the mocap target.
GRASP_OFFSET = np.array([0.0, 0.0, -0.16])
TIMESTEPS = {"reach": 0.002, "peg_in_box": 0.001}
N_SUBSTEPS = 20
TABLE_TOP = 0.58  # table centre z 0.53625 + half height 0.04375
BOX_TO_GOAL = np.array([0.0, 0.075, -0.035])  # PegInBox: goal = box position + this

# Test scenes: the colour of skybox, floor and pedestal geoms (train: None).
MODE_COLORS: dict[str, tuple[float, float, float] | None] = {
    "train": None,
    "test1": (1.0, 0.5, 1.0),
    "test2": (0.5, 0.9, 0.8),
    "test3": (0.5, 0.1, 0.1),
    "test4": (0.1, 0.5, 0.8),
    "test5": (0.3, 0.2, 0.0),
}

# Joint ranges (rad) and damping of the xArm7's seven joints.
_JOINTS = [
    ("-6.28319 6.28319", 10), ("-2.059 2.0944", 10), ("-6.28319 6.28319", 5), ("-0.19198 3.927", 5),
    ("-6.28319 6.28319", 5), ("-1.69297 3.14159", 2), ("-6.28319 6.28319", 2),
]
_ROT_NEG_X = "0.707107 -0.707107 0 0"  # -90 deg about x
_ROT_POS_X = "0.707107 0.707107 0 0"   # +90 deg about x


def texture_asset_name(mode: str) -> str:
    return f"table_{mode}.png"


def _fmt(v) -> str:
    return " ".join(f"{float(x):g}" for x in v)


def _joint(i: int) -> str:
    rng, damping = _JOINTS[i - 1]
    return f'<joint name="joint{i}" axis="0 0 1" range="{rng}" damping="{damping}" frictionloss="1"/>'


def _arm() -> str:
    """The xArm7 body chain, from the base on the pedestal to link7 with gripper and grasp site."""
    return f"""
    <body name="robot0:mocap" mocap="true" pos="1.3 0.3 0.9" quat="0 1 0 0"/>
    <body name="link0" pos="1.09 0.3 0.73" childclass="arm">
      <geom type="cylinder" pos="0 0 0.06" size="0.07 0.06" material="arm_mat"/>
      <body name="link1" pos="0 0 0.267">
        {_joint(1)}
        <geom type="capsule" fromto="0 0 -0.15 0 0 0" size="0.052" material="arm_mat"/>
        <body name="link2" quat="{_ROT_NEG_X}">
          {_joint(2)}
          <geom type="cylinder" fromto="0 0 -0.06 0 0 0.06" size="0.05" material="arm_mat"/>
          <geom type="capsule" fromto="0 0 0 0 -0.293 0" size="0.045" material="arm_mat"/>
          <body name="link3" pos="0 -0.293 0" quat="{_ROT_POS_X}">
            {_joint(3)}
            <geom type="capsule" fromto="0 0 0 0.0525 0 0" size="0.045" material="arm_mat"/>
            <body name="link4" pos="0.0525 0 0" quat="{_ROT_POS_X}">
              {_joint(4)}
              <geom type="cylinder" fromto="0 0 -0.055 0 0 0.055" size="0.046" material="arm_mat"/>
              <geom type="capsule" fromto="0 0 0 0.0775 -0.05 0" size="0.04" material="arm_mat"/>
              <geom type="capsule" fromto="0.0775 -0.05 0 0.0775 -0.3425 0" size="0.04" material="arm_mat"/>
              <body name="link5" pos="0.0775 -0.3425 0" quat="{_ROT_POS_X}">
                {_joint(5)}
                <geom type="sphere" size="0.042" material="arm_mat"/>
                <body name="link6" quat="{_ROT_POS_X}">
                  {_joint(6)}
                  <geom type="cylinder" fromto="0 0 -0.045 0 0 0.045" size="0.04" material="arm_mat"/>
                  <geom type="capsule" fromto="0 0 0 0.076 0 0" size="0.036" material="arm_mat"/>
                  <geom type="capsule" fromto="0.076 0 0 0.076 0.06 0" size="0.036" material="arm_mat"/>
                  <body name="link7" pos="0.076 0.097 0" quat="{_ROT_NEG_X}">
                    {_joint(7)}
                    <geom type="cylinder" pos="0 0 0.015" size="0.04 0.015" material="grey_mat"/>
                    <geom type="box" pos="0 0 0.065" size="0.03 0.055 0.035" material="grey_mat"/>
                    <site name="grasp" pos="0 0 0.16" size="0.01" rgba="1 0 0 0"/>
                    <body name="left_finger" pos="0 0.02 0.125">
                      <joint name="left_finger" type="slide" axis="0 1 0" range="0 0.035" damping="1"/>
                      <geom type="box" size="0.012 0.006 0.035" material="finger_mat"/>
                    </body>
                    <body name="right_finger" pos="0 -0.02 0.125">
                      <joint name="right_finger" type="slide" axis="0 -1 0" range="0 0.035" damping="1"/>
                      <geom type="box" size="0.012 0.006 0.035" material="finger_mat"/>
                    </body>
                    __ATTACHMENT__
                  </body>
                </body>
              </body>
            </body>
          </body>
        </body>
      </body>
    </body>"""


def _peg_chain() -> str:
    """PegInBox: a peg hanging from the gripper on two capsules with ball joints (in link7's frame, z down)."""
    return """
                    <body name="chain0" pos="0 0 0.10" childclass="chain">
                      <joint name="chain0" type="ball" range="0 0.35" damping="0.1"/>
                      <geom type="capsule" fromto="0 0 0 0 0 0.04" size="0.004" mass="0.005" rgba="0.1 0.1 0.1 1"/>
                      <body name="chain1" pos="0 0 0.04">
                        <joint name="chain1" type="ball" range="0 0.35" damping="0.1"/>
                        <geom type="capsule" fromto="0 0 0 0 0 0.04" size="0.004" mass="0.005" rgba="0.1 0.1 0.1 1"/>
                        <body name="peg" pos="0 0 0.04">
                          <joint name="peg" type="ball" range="0 0.35" damping="0.1"/>
                          <geom name="peg" type="cylinder" pos="0 0 0.04" size="0.03 0.035" mass="0.1"
                                rgba="0.6 0.8 0.5 1" condim="3"/>
                          <site name="peg" pos="0 0 0.04" size="0.005" rgba="0 0 0 0"/>
                        </body>
                      </body>
                    </body>"""


def _box() -> str:
    """PegInBox: an open red box (free body) whose origin is its -y wall, as in the published scene."""
    walls = [
        ("0 0 0", "0.065 0.002 0.04"), ("0 0.149 0", "0.065 0.002 0.04"),
        ("0.064 0.074 0", "0.002 0.075 0.04"), ("-0.064 0.074 0", "0.002 0.075 0.04"),
        ("0 0.074 -0.038", "0.065 0.075 0.002"),
    ]
    geoms = "\n".join(
        f'      <geom type="box" pos="{p}" size="{s}" rgba="0.8 0 0 1" mass="1" condim="4"/>' for p, s in walls
    )
    return f"""
    <body name="box" pos="1.605 0.25 0.62">
      <freejoint name="box"/>
{geoms}
      <site name="goal" pos="{_fmt(BOX_TO_GOAL)}" size="0.0475 0.001" rgba="0 0 0 0" type="cylinder"/>
    </body>"""


def scene_xml(task: str, mode: str) -> str:
    """The MJCF of ``task`` in ``mode``.

    The kinematic tree, masses and contacts do not depend on ``mode``: only
    colours and the table texture change (asset ``texture_asset_name(mode)``
    must be passed to MuJoCo for test modes).
    """
    if task not in TIMESTEPS:
        raise ValueError(f"unknown task {task!r}; valid tasks: {', '.join(TIMESTEPS)}")
    if mode not in MODE_COLORS:
        raise ValueError(f"unknown mode {mode!r}; valid modes: {', '.join(MODE_COLORS)}")
    color = MODE_COLORS[mode]
    tint = np.ones(3) if color is None else np.asarray(color)
    skybox = _fmt(tint)
    floor_rgba = _fmt(np.array([0.2, 0.3, 0.3]) * tint) + " 1"
    pedestal_rgba = _fmt(np.array([0.925, 0.835, 0.655]) * tint) + " 1"
    if color is None:
        table_tex = '<texture name="table_tex" type="cube" builtin="flat" rgb1="1 1 1" width="32" height="32"/>'
    else:
        table_tex = f'<texture name="table_tex" type="cube" file="{texture_asset_name(mode)}"/>'
    target = ""
    if task == "reach":
        target = '<site name="target" pos="1.605 0.3 0.58" size="0.0475 0.001" rgba="1 0 0 1" type="cylinder"/>'
    arm = _arm().replace("__ATTACHMENT__", _peg_chain() if task == "peg_in_box" else "")
    return f"""<mujoco model="xarm7_{task}_{mode}">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="{TIMESTEPS[task]}"/>
  <visual><global offwidth="640" offheight="640"/></visual>
  <default>
    <default class="arm">
      <joint armature="0.1" stiffness="3"/>
      <geom contype="0" conaffinity="0" density="500"/>
    </default>
    <default class="chain">
      <geom contype="1" conaffinity="1"/>
    </default>
  </default>
  <asset>
    <texture type="skybox" builtin="gradient" rgb1="{skybox}" rgb2="0 0 0" width="32" height="32"/>
    <texture name="white" type="cube" builtin="flat" rgb1="1 1 1" width="32" height="32"/>
    {table_tex}
    <material name="floor_mat" texture="white" rgba="{floor_rgba}" specular="0" shininess="0"/>
    <material name="table_mat" texture="table_tex" rgba="1 1 1 1" specular="0.2" shininess="0.2"/>
    <material name="pedestal_mat" texture="white" rgba="{pedestal_rgba}" specular="0.5" shininess="0.8"/>
    <material name="arm_mat" texture="white" rgba="1 1 1 1" specular="0.4" shininess="0.03"/>
    <material name="grey_mat" rgba="0.75 0.75 0.75 1" specular="0.4" shininess="0.03"/>
    <material name="finger_mat" rgba="0.05 0.05 0.05 1" specular="0.4" shininess="0.03"/>
  </asset>
  <worldbody>
    <geom name="floor" type="plane" pos="1.2 -2.0 0" size="1.0 10.0 1" material="floor_mat"/>
    {target}
    <body name="pedestal" pos="0.75 0 0.71">
      <geom type="box" size="0.4 0.4 0.01" material="pedestal_mat" contype="0" conaffinity="0"/>
    </body>
    <body name="table" pos="1.555 0.3 0.53625">
      <geom name="table" type="box" size="0.3 0.6 0.04375" material="table_mat" friction="1 0.005 0.0001"/>
    </body>
{arm}{_box() if task == "peg_in_box" else ""}
    <light directional="true" ambient="0.1 0.1 0.1" diffuse="0 0 0" specular="0 0 0" castshadow="false" pos="1.65 0 10" dir="-0.57 -0.57 -0.57"/>
    <light directional="true" ambient="0.1 0.1 0.1" diffuse="0 0 0" specular="0 0 0" castshadow="false" pos="0 -4 4" dir="0 1 -0.1"/>
    <light directional="true" ambient="0.05 0.05 0.05" diffuse="0 0 0" specular="0 0 0" castshadow="false" pos="2.13 1.6 2.5"/>
    <light directional="true" diffuse="0.3 0.3 0.3" castshadow="false" pos="0 0 2" dir="0.2 0.2 -0.8"/>
    <camera name="third_person" fovy="50" pos="2.10 0.3 1.4" euler="0 0.83 1.57"/>
  </worldbody>
  <equality>
    <weld body1="robot0:mocap" body2="link7" relpose="0 0 0 1 0 0 0" solimp="0.9 0.95 0.001" solref="0.02 1"/>
  </equality>
  <actuator>
    <position name="left_finger" joint="left_finger" kp="50" ctrlrange="0 0.035"/>
    <position name="right_finger" joint="right_finger" kp="50" ctrlrange="0 0.035"/>
  </actuator>
</mujoco>
"""

