import base64
import io

from PIL import Image


def image_url(width: int = 336, height: int = 336, fmt: str = "PNG") -> str:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (180, 40, 40)).save(buf, fmt)
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(buf.getvalue()).decode()


def chat(text: str = "hi", images: list[str] = (), **extra) -> dict:
    content = [{"type": "image_url", "image_url": {"url": url}} for url in images]
    content.append({"type": "text", "text": text})
    return {"messages": [{"role": "user", "content": content}], "max_tokens": 8, **extra}
