"""A real browser for the page: headless Chromium from Debian's packages, driven by Selenium (the
page's screenshot, the tests that open it). Nothing is ever downloaded."""

from __future__ import annotations

from pathlib import Path

from bench.core.errors import BenchError

# -----------------------------------------------------------------------------------

CHROMIUM = ("/usr/bin/chromium", "/usr/lib/chromium/chromium")
CHROMEDRIVER = ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")


def browser_paths() -> tuple[str | None, str | None]:
    """Debian's chromium and chromium-driver, if installed (nothing is ever downloaded)."""
    found = lambda paths: next((p for p in paths if Path(p).is_file()), None)
    return found(CHROMIUM), found(CHROMEDRIVER)


def browser(width: int = 1400, height: int = 1000):
    """Headless Chromium from Debian's packages, driven by Selenium through chromium-driver."""
    import os

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver = browser_paths()
    if not binary or not driver:
        raise BenchError("chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)")
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must never fetch a browser or driver
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--window-size={width},{height}",
        "--hide-scrollbars",
        "--allow-file-access-from-files",
    ):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(executable_path=driver), options=opts)


def screenshot(index: Path, png: Path, width: int = 1400, height: int = 900) -> Path:
    """Open a written page in headless Chromium and save a screenshot of its top (the README's)."""
    drv = browser(width, height)
    try:
        drv.get(Path(index).resolve().as_uri())
        drv.save_screenshot(str(png))
    finally:
        drv.quit()
    return Path(png)


if __name__ == "__main__":  # python -m bench.render.browser INDEX.html OUT.png
    import sys

    print(screenshot(Path(sys.argv[1]), Path(sys.argv[2])))
