"""Profile and settings: nickname, signature, avatar (built-in set or a picture file, with a
preview) and the devices used in meetings (the synthetic sources are always listed)."""
from __future__ import annotations

import io
import tkinter as tk
from pathlib import Path
from tkinter import filedialog, ttk

from PIL import Image, ImageTk

from client.kernel import ClientKernel
from client.profile import builtin_avatar, builtin_avatar_count
from common import limits

from . import devices
from .bridge import UiBridge
from .settings import Settings
from .widgets import COLORS, FONT, AvatarCache, describe_error, downloads_dir, round_avatar


def ask_picture_path(parent: tk.Misc) -> str:
    return filedialog.askopenfilename(parent=parent, title="Choose a picture", initialdir=str(downloads_dir()),
                                      filetypes=[("Pictures", "*.png *.jpg *.jpeg *.gif *.webp"), ("All files", "*")])


class ProfileWindow(tk.Toplevel):
    def __init__(self, master: tk.Misc, kernel: ClientKernel, bridge: UiBridge, avatars: AvatarCache,
                 settings: Settings, settings_path: Path | None) -> None:
        """``avatars``: the main window's cache, which draws the preview; a device chosen is
        saved into ``settings`` (the file ``settings_path``) at once."""
        super().__init__(master)
        self.kernel = kernel
        self.bridge = bridge
        self.avatars = avatars
        self.settings = settings
        self.settings_path = settings_path
        self.title("Profile and settings")
        self.configure(background=COLORS["bg"])
        self.resizable(False, False)
        self.transient(master)
        self._images: list[ImageTk.PhotoImage] = []
        self.chosen_builtin: int | None = None
        self.chosen_file: bytes | None = None
        self._build()

    def _build(self) -> None:
        user = self.kernel.user or {}
        body = ttk.Frame(self, padding=20)
        body.pack(fill="both", expand=True)
        notebook = ttk.Notebook(body)
        notebook.pack(fill="both", expand=True)
        profile = ttk.Frame(notebook, padding=14)
        settings = ttk.Frame(notebook, padding=14)
        notebook.add(profile, text="Profile")
        notebook.add(settings, text="Devices")
        self.notebook = notebook

        top = ttk.Frame(profile)
        top.pack(fill="x")
        self.preview = tk.Label(top, background=COLORS["bg"])
        self.preview.pack(side="left")
        self._show_preview(self.avatars.get(user, 96))
        fields = ttk.Frame(top)
        fields.pack(side="left", fill="x", expand=True, padx=(16, 0))
        ttk.Label(fields, text="NICKNAME", style="Section.TLabel").pack(anchor="w")
        self.nickname = ttk.Entry(fields, width=30)
        self.nickname.insert(0, user.get("nickname", ""))
        self.nickname.pack(fill="x")
        ttk.Label(fields, text="SIGNATURE", style="Section.TLabel").pack(anchor="w", pady=(8, 0))
        self.signature = ttk.Entry(fields, width=30)
        self.signature.insert(0, user.get("signature", ""))
        self.signature.pack(fill="x")
        self.count = ttk.Label(fields, text="", style="Muted.TLabel", font=(FONT, 8))
        self.count.pack(anchor="e")
        self.signature.bind("<KeyRelease>", lambda e: self._count())
        self._count()

        ttk.Label(profile, text="AVATAR", style="Section.TLabel").pack(anchor="w", pady=(12, 4))
        grid = ttk.Frame(profile)
        grid.pack(fill="x")
        self.builtin_buttons: dict[int, tk.Label] = {}
        for number in range(1, builtin_avatar_count() + 1):
            photo = ImageTk.PhotoImage(round_avatar(builtin_avatar(number), 40), master=self)
            self._images.append(photo)
            label = tk.Label(grid, image=photo, background=COLORS["bg"], cursor="hand2", padx=2, pady=2,
                             highlightthickness=2, highlightbackground=COLORS["bg"])
            label.grid(row=(number - 1) // 8, column=(number - 1) % 8, padx=2, pady=2)
            label.bind("<Button-1>", lambda e, n=number: self.choose_builtin(n))
            self.builtin_buttons[number] = label
        ttk.Button(profile, text="Use a picture file…", command=self.choose_file).pack(anchor="w", pady=(8, 0))

        self.error = ttk.Label(profile, text="", style="Error.TLabel", wraplength=380)
        self.error.pack(anchor="w", pady=(8, 0))
        row = ttk.Frame(profile)
        row.pack(fill="x", pady=(6, 0))
        self.save_button = ttk.Button(row, text="Save", style="Accent.TButton", command=self.save)
        self.save_button.pack(side="right")
        ttk.Button(row, text="Close", command=self.destroy).pack(side="right", padx=(0, 8))

        self.device_boxes: dict[str, tuple[ttk.Combobox, list[tuple[str, str]]]] = {}
        for key, label, options in (("camera", "Camera", devices.cameras()),
                                    ("microphone", "Microphone", devices.microphones()),
                                    ("speakers", "Speakers", devices.speakers())):
            ttk.Label(settings, text=label.upper(), style="Section.TLabel").pack(anchor="w", pady=(8, 2))
            box = ttk.Combobox(settings, state="readonly", width=40, values=[name for _v, name in options])
            current = getattr(self.settings, key)
            index = next((i for i, (value, _n) in enumerate(options) if value == current), 0)
            box.current(index)
            box.pack(anchor="w")
            box.bind("<<ComboboxSelected>>", lambda e, k=key: self._device_chosen(k))
            self.device_boxes[key] = (box, options)
        ttk.Label(settings, text="Changes apply to the next meeting. Without a device the synthetic\n"
                                 "source is used: a moving test pattern, a tone or silence.",
                  style="Muted.TLabel", font=(FONT, 8), justify="left").pack(anchor="w", pady=(12, 0))

    def _count(self) -> None:
        n = len(self.signature.get())
        self.count.configure(text=f"{n}/{limits.SIGNATURE_MAX}",
                             foreground=COLORS["danger"] if n > limits.SIGNATURE_MAX else COLORS["muted"])

    def _show_preview(self, photo: ImageTk.PhotoImage) -> None:
        self._preview_photo = photo
        self.preview.configure(image=photo)

    def choose_builtin(self, number: int) -> None:
        self.chosen_builtin, self.chosen_file = number, None
        for n, label in self.builtin_buttons.items():
            label.configure(highlightbackground=COLORS["accent"] if n == number else COLORS["bg"])
        self._show_preview(ImageTk.PhotoImage(round_avatar(builtin_avatar(number), 96), master=self))

    def choose_file(self, path: str | None = None) -> None:
        path = path or ask_picture_path(self)
        if not path:
            return
        try:
            data = Path(path).read_bytes()
            if len(data) > limits.MAX_AVATAR_BYTES:
                raise ValueError("The picture is larger than 2 MB")
            Image.open(io.BytesIO(data)).verify()
            preview = round_avatar(data, 96)
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            self.error.configure(text=str(exc) if isinstance(exc, ValueError) else "This file is not a picture")
            return
        self.error.configure(text="")
        self.chosen_file, self.chosen_builtin = data, None
        for label in self.builtin_buttons.values():
            label.configure(highlightbackground=COLORS["bg"])
        self._show_preview(ImageTk.PhotoImage(preview, master=self))

    def _device_chosen(self, key: str) -> None:
        box, options = self.device_boxes[key]
        setattr(self.settings, key, options[box.current()][0])
        self.settings.save(self.settings_path)

    def save(self) -> None:
        user = self.kernel.user or {}
        nickname, signature = self.nickname.get(), self.signature.get()
        builtin, picture = self.chosen_builtin, self.chosen_file
        profile = self.kernel.profile

        def work() -> None:
            if nickname.strip() != user.get("nickname") or signature.strip() != (user.get("signature") or ""):
                profile.update(nickname=nickname, signature=signature)
            if builtin is not None:
                profile.choose_builtin_avatar(builtin)
            elif picture is not None:
                profile.upload_avatar(picture)

        def done(_r) -> None:
            self.save_button.configure(state="normal", text="Save")
            self.destroy()

        def failed(exc: BaseException) -> None:
            self.save_button.configure(state="normal", text="Save")
            self.error.configure(text=describe_error(exc))
        self.save_button.configure(state="disabled", text="Saving…")
        self.error.configure(text="")
        self.bridge.call(work, on_done=done, on_error=failed)
