"""Pictures for people: contact sheets of ranked results."""

from __future__ import annotations

from PIL import Image, ImageDraw


def contact_sheet(images: list[Image.Image], labels: list[str], tile: int = 160, columns: int = 5,
                  highlight: list[bool] | None = None, title: str | None = None) -> Image.Image:
    """Tile `images` in a grid with a label under each; highlighted tiles get a green frame."""
    rows = (len(images) + columns - 1) // columns
    label_h, title_h = 18, 24 if title else 0
    sheet = Image.new("RGB", (columns * tile, title_h + rows * (tile + label_h)), "white")
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((6, 5), title, fill="black")
    for i, (image, label) in enumerate(zip(images, labels)):
        x, y = (i % columns) * tile, title_h + (i // columns) * (tile + label_h)
        sheet.paste(image.convert("RGB").resize((tile - 8, tile - 8), Image.NEAREST), (x + 4, y + 4))
        if highlight and highlight[i]:
            draw.rectangle([x + 1, y + 1, x + tile - 2, y + tile - 2], outline=(0, 170, 0), width=3)
        draw.text((x + 4, y + tile), label, fill="black")
    return sheet
