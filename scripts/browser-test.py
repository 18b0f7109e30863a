#!/usr/bin/env python3
"""The triage console in a real browser: what an analyst sees, at 1280 and 390 px.

    python3 scripts/browser-test.py --bin-dir target/debug

Starts, on 127.0.0.1 with free ports and a temporary directory, the sandbox simulator
(`krs-sandbox-sim`) with a scenario written here (a Red file with a hostile name, YARA rules and
detections; tasks whose names are markup; a clean and a suspicious task) and the exporter
watching it (1 s polls, `--storage.path` in the temporary directory, `sandbox.ui_task_url`
set). Then, in Debian's headless Chromium over WebDriver (selenium), checks:

1. the overview's summary counts the Red task and lists it; hostile names show as text, no
   dialog opened and no injected element exists; the first Tab reaches the skip link;
2. the task table filters by zone and text and sorts by name both ways;
3. following the Red task leads to its page: full 64-hex SHA-256s with copy buttons, the
   detections and rule names, the link to the sandbox's UI; an unknown id is a 404 page;
4. the events page lists the new files and filters by zone;
5. an automatic refresh (awaited through body[data-refreshed]) keeps the filter inputs;
6. a reload that fails (config rewritten, POST /-/reload) shows on the overview with its
   problems and in the feed; `prefers-color-scheme: dark` gives the dark variant;
7. no page scrolls sideways at 1280 or 390 px;
8. the feed survives a restart of the exporter (same `--storage.path`);
and writes full-page screenshots of the three pages at both widths to $KRS_SCREENSHOTS (default:
<cargo target dir>/screenshots). Prints PASS/FAIL per check and `N passed, M failed`; exits 1 on
any failure. Waits on conditions with deadlines, never on bare sleeps.
Needs: chromium, chromium-driver (apt) and selenium 4 (pip).
"""

import argparse
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # no scripts/__pycache__ from loading e2e.py
_spec = importlib.util.spec_from_file_location("e2e", os.path.join(HERE, "e2e.py"))
e2e = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(e2e)  # its Report, free_port and wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
USER, PASSWORD = "browser", "browser-password"
HOSTILE_TASK = '<img src=x onerror=alert(1)>'
HOSTILE_FILE = '"><script>alert(1)</script>\u202etxt.exe'
RED = {"id": "0d5b4e44-4c0e-4f0b-9a57-3f2d1b9e6c71", "name": HOSTILE_TASK}
CLEAN = {"id": "7c9e6679-7425-40de-944b-e07fc1f90ae7", "name": "clean-build-artifacts"}
ORANGE = {"id": "5b2f9c1d-3e4a-4f6b-8c7d-9e0a1b2c3d4e", "name": "suspicious-macro"}
QUIET = {"id": "3f1c9a2e-8b4d-4e6f-a1c3-5d7e9f0b2a4c", "name": "archive-quiet"}
RED_SHA = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
RULES = ["Cobalt_Strike_Beacon", "Loader_Stage2"]
DETECTIONS = ["HEUR:Trojan.Win32.Generic", "Backdoor.Win64.Beacon.a"]
WIDTHS = [(1280, 900), (390, 844)]
PAGES = ["overview", "task", "events"]


def start(argv, log):
    return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc):
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def get_json(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return json.load(r)


def status_of(port, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def default_bin_dir():
    meta = subprocess.run(["cargo", "metadata", "--format-version", "1", "--no-deps"],
                          cwd=ROOT, check=True, capture_output=True, text=True).stdout
    return os.path.join(json.loads(meta)["target_directory"], "debug")


def write_setup(tmp, sim_port):
    q = json.dumps  # a JSON string is a YAML double-quoted scalar
    scenario = os.path.join(tmp, "scenario.yml")
    with open(scenario, "w") as f:
        f.write(f"""\
credentials:
  username: {USER}
  password: {PASSWORD}
tasks:
  - id: {RED["id"]}
    name: red
    files:
      - {{name: invoice.doc, zone: Grey, size: 48213, type: Microsoft Word document, https: true}}
      - name: {q(HOSTILE_FILE)}
        zone: Red
        size: 73802
        type: PE32 executable
        sha256: {RED_SHA}
        after: 3s
        detections: {q(DETECTIONS)}
        yara: {q(RULES)}
  - id: {CLEAN["id"]}
    name: clean
    files:
      - {{name: build.log, zone: Green, size: 1200, type: text, after: 3s}}
  - id: {ORANGE["id"]}
    name: orange
    files:
      - {{name: macro.vbs, zone: Orange, size: 900, type: VBScript, after: 3s, detections: [HEUR:Trojan.Script.Generic]}}
  - id: {QUIET["id"]}
    name: quiet
    files:
      - {{name: readme.txt, zone: Grey, size: 10, type: text}}
""")
    config = os.path.join(tmp, "krs-exporter.yml")
    tasks = "".join(f"  - id: {t['id']}\n    name: {q(t['name'])}\n" for t in (RED, CLEAN, ORANGE, QUIET))
    with open(config, "w") as f:
        f.write(f"""\
sandbox:
  url: http://127.0.0.1:{sim_port}
  username: {USER}
  password: {PASSWORD}
  timeout: 500ms
  ui_task_url: https://sandbox.example.com/tasks/{{task_id}}
polling:
  interval: 1s
  lifecycle: true
tasks:
{tasks}""")
    return scenario, config


def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    w, h = WIDTHS[0]
    for arg in ["--headless=new", "--no-sandbox", "--disable-gpu", f"--window-size={w},{h}"]:
        options.add_argument(arg)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def set_width(driver, width, height):
    # Headless windows have a minimum width above 390; device metrics emulate a phone exactly.
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600})


def no_dialog(driver):
    try:
        driver.switch_to.alert
        return False
    except NoAlertPresentException:
        return True


def injected(driver):
    """Elements markup in a name would have created: an img[src=x], or any script but ours."""
    return driver.execute_script("""
        const imgs = document.querySelectorAll('img[src="x"], img[onerror]').length;
        const scripts = [...document.scripts].filter(s => !s.src.endsWith('/static/console.js')).length;
        return imgs + scripts;""")


def overflow(driver):
    return driver.execute_script(
        "return [document.documentElement.scrollWidth, window.innerWidth]")


def table_names(driver):
    return [a.text for a in driver.find_elements(By.CSS_SELECTOR, "#tasks a.task-name")]


def text_of(driver):
    return driver.execute_script("return document.body.textContent")


def run(report, driver, base, shots, config):
    wait = WebDriverWait(driver, 15)
    driver.get(base + "/")
    red_count = driver.find_element(By.ID, "red-count").text
    report.check("overview: the summary counts one task with Red files", red_count == "1", red_count)
    listed = [a.text for a in driver.find_elements(By.CSS_SELECTOR, "#card-red .red-list a")]
    report.check("overview: the Red task is listed, its markup name shown as text",
                 HOSTILE_TASK in listed, str(listed))
    report.check("overview: hostile names open no dialog and inject no element",
                 no_dialog(driver) and injected(driver) == 0, f"injected={injected(driver)}")
    report.check("overview: the status says where the store is and that polling runs",
                 "browser" in driver.find_element(By.ID, "st-storage").text
                 and "running" in driver.find_element(By.ID, "polling").text,
                 driver.find_element(By.ID, "st-storage").text)
    report.check("overview: the chart of new files per hour is drawn",
                 len(driver.find_elements(By.CSS_SELECTOR, "#chart rect")) >= 1)
    driver.find_element(By.TAG_NAME, "body").send_keys(Keys.TAB)
    focused = driver.switch_to.active_element.get_attribute("class")
    report.check("overview: the first Tab reaches the skip link", focused == "skip", focused)

    # Filters and sorting, through the form and the column headers.
    everyone = table_names(driver)
    report.check("table: every watched task is listed, the Red one first",
                 len(everyone) == 4 and everyone[0] == HOSTILE_TASK, str(everyone))
    Select(driver.find_element(By.ID, "f-zone")).select_by_visible_text("Red")
    wait.until(lambda d: "zone=Red" in d.current_url)
    report.check("table: the zone filter keeps only the Red task",
                 table_names(driver) == [HOSTILE_TASK], str(table_names(driver)))
    driver.get(base + "/")
    box = driver.find_element(By.ID, "f-q")
    box.send_keys("clean", Keys.ENTER)
    wait.until(lambda d: "q=clean" in d.current_url)
    report.check("table: the text filter keeps only the matching task",
                 table_names(driver) == [CLEAN["name"]], str(table_names(driver)))
    driver.get(base + "/")
    driver.find_element(By.CSS_SELECTOR, 'th a[data-sort="name"]').click()
    wait.until(lambda d: "sort=name" in d.current_url)
    ascending = table_names(driver)
    driver.find_element(By.CSS_SELECTOR, 'th a[data-sort="name"]').click()
    wait.until(lambda d: "dir=desc" in d.current_url)
    descending = table_names(driver)
    report.check("table: sorting by name orders the rows both ways",
                 ascending == sorted(everyone) and descending == ascending[::-1] and ascending != everyone,
                 f"{ascending} / {descending}")

    # The refresh keeps the filter: the query string carries it, the form is never swapped.
    driver.get(base + "/?zone=Red")
    box = driver.find_element(By.ID, "f-q")
    box.send_keys("invoice")
    driver.execute_script("document.activeElement.blur()")
    try:
        WebDriverWait(driver, 30).until(
            lambda d: int(d.find_element(By.TAG_NAME, "body").get_attribute("data-refreshed")) >= 1)
        refreshed = True
    except TimeoutException:
        refreshed = False
    zone = Select(driver.find_element(By.ID, "f-zone")).first_selected_option.text
    typed = driver.find_element(By.ID, "f-q").get_attribute("value")
    report.check("refresh: the live regions refreshed on their own",
                 refreshed, driver.find_element(By.TAG_NAME, "body").get_attribute("data-refreshed"))
    report.check("refresh: the zone filter and the typed text are kept, the rows still filtered",
                 zone == "Red" and typed == "invoice" and table_names(driver) == [HOSTILE_TASK],
                 f"zone={zone!r} typed={typed!r} rows={table_names(driver)}")

    # Following the Red task to its page.
    driver.get(base + "/")
    driver.find_element(By.CSS_SELECTOR, "#card-red .red-list a").click()
    wait.until(lambda d: "/tasks/" in d.current_url)
    report.check("task: the Red task's link leads to its page", RED["id"] in driver.current_url,
                 driver.current_url)
    hashes = [c.text for c in driver.find_elements(By.CSS_SELECTOR, "#files code.hash")]
    report.check("task: every file's SHA-256 is shown in full",
                 len(hashes) == 2 and all(re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes)
                 and RED_SHA in hashes, str(hashes))
    buttons = driver.find_elements(By.CSS_SELECTOR, "#files button.copy")
    report.check("task: each hash has a visible copy button holding it",
                 len(buttons) == 2 and all(b.is_displayed() for b in buttons)
                 and RED_SHA in [b.get_attribute("data-copy") for b in buttons])
    page = text_of(driver)
    report.check("task: detections and YARA rule names are listed",
                 all(n in page for n in DETECTIONS + RULES), page[:400])
    shown = re.search(r'"><script>alert\(1\)</script>(.*?)txt\.exe', page)
    report.check("task: the hostile file name is shown as text, its bidi override neutralised",
                 shown is not None and "\u202e" not in page, repr(shown.group(0) if shown else page[:600]))
    report.check("task: no dialog and no injected element",
                 no_dialog(driver) and injected(driver) == 0)
    link = driver.find_elements(By.ID, "sandbox-link")
    report.check("task: the sandbox's UI is linked for this task",
                 bool(link) and link[0].get_attribute("href") == f"https://sandbox.example.com/tasks/{RED['id']}")
    report.check("task: the recent polls are listed",
                 len(driver.find_elements(By.CSS_SELECTOR, "#polls tbody tr")) >= 1)
    port = base.rsplit(":", 1)[1]
    driver.get(base + "/tasks/a1a1a1a1-b2b2-4c3c-8d4d-e5e5e5e5e5e5")
    report.check("task: an unknown id is a 'not watched' page with 404",
                 driver.find_elements(By.ID, "not-watched")
                 and status_of(port, "/tasks/a1a1a1a1-b2b2-4c3c-8d4d-e5e5e5e5e5e5") == 404)

    # The feed.
    driver.get(base + "/events")
    kinds = [li.get_attribute("data-kind") for li in driver.find_elements(By.CSS_SELECTOR, "#events li")]
    report.check("events: the new files are listed", kinds.count("new_file") >= 3, str(kinds))
    report.check("events: the Red file's rules show, the name as text",
                 all(r in text_of(driver) for r in RULES) and injected(driver) == 0 and no_dialog(driver))
    Select(driver.find_element(By.ID, "f-zone")).select_by_visible_text("Red")
    wait.until(lambda d: "zone=Red" in d.current_url)
    items = driver.find_elements(By.CSS_SELECTOR, "#events li")
    report.check("events: the zone filter keeps only the Red file",
                 len(items) == 1 and "Red" in items[0].text, str([i.text for i in items]))

    # A reload that fails is shown, with its problems, on the overview and in the feed.
    with open(config, "a") as f:
        f.write("metrics:\n  max_label_length: lots\n")
    reload = urllib.request.Request(f"{base}/-/reload", method="POST")
    try:
        urllib.request.urlopen(reload, timeout=10)
        answered = 200
    except urllib.error.HTTPError as e:
        answered = e.code
    driver.get(base + "/")
    shown = driver.find_element(By.ID, "st-reload").text
    report.check("reload: a failed reload shows on the overview with its problems",
                 answered == 500 and "failed" in shown and "metrics.max_label_length" in shown,
                 f"{answered}: {shown}")
    driver.get(base + "/events")
    report.check("reload: the failed reload is in the feed",
                 "Reload failed" in text_of(driver))

    # The dark variant follows the system's preference.
    driver.get(base + "/")
    light = driver.execute_script("return getComputedStyle(document.body).backgroundColor")
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {
        "features": [{"name": "prefers-color-scheme", "value": "dark"}]})
    dark = driver.execute_script("return getComputedStyle(document.body).backgroundColor")
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
    report.check("overview: prefers-color-scheme dark gives the dark variant",
                 light != dark and dark == "rgb(13, 17, 23)", f"{light} / {dark}")

    # Widths: no sideways scrolling, and the screenshots.
    os.makedirs(shots, exist_ok=True)
    urls = {"overview": "/", "task": f"/tasks/{RED['id']}", "events": "/events"}
    for width, height in WIDTHS:
        set_width(driver, width, height)
        for name in PAGES:
            driver.get(base + urls[name])
            scroll, inner = overflow(driver)
            report.check(f"{name} at {width} px: no horizontal overflow", scroll <= inner,
                         f"scrollWidth {scroll} > innerWidth {inner}")
            # The whole page, not only the first screen: the viewport grows to the document.
            full = min(driver.execute_script("return document.documentElement.scrollHeight"), 8000)
            set_width(driver, width, max(full, height))
            driver.save_screenshot(os.path.join(shots, f"{name}-{width}.png"))
            set_width(driver, width, height)
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin-dir", help="directory holding krs-exporter and krs-sandbox-sim "
                    "(default: the debug directory of cargo's target dir)")
    args = ap.parse_args()
    bin_dir = args.bin_dir or default_bin_dir()
    shots = os.environ.get("KRS_SCREENSHOTS") or os.path.join(os.path.dirname(bin_dir), "screenshots")
    began = time.monotonic()
    report = e2e.Report()
    with tempfile.TemporaryDirectory() as tmp:
        sim_port, exp_port = e2e.free_port(), e2e.free_port()
        scenario, config = write_setup(tmp, sim_port)
        with open(config) as f:
            good_config = f.read()
        store = os.path.join(tmp, "browser-store")
        with open(os.path.join(tmp, "sim.log"), "w") as log:
            sim = start([os.path.join(bin_dir, "krs-sandbox-sim"), "--scenario", scenario,
                         "--listen", f"127.0.0.1:{sim_port}"], log)
        def start_exporter(log_name):
            with open(os.path.join(tmp, log_name), "w") as log:
                return start([os.path.join(bin_dir, "krs-exporter"), "--config.file", config,
                              f"--storage.path={store}",
                              "--web.listen-address", f"127.0.0.1:{exp_port}"], log)
        exporter = start_exporter("exporter.log")
        driver = None
        try:
            # Ready, and every delayed file counted (the Red one among them).
            ready = e2e.wait_for(lambda: sum(
                t["zones"]["Red"] + t["zones"]["Green"] + t["zones"]["Orange"]
                for t in get_json(exp_port, "/api/v1/tasks")["tasks"]) == 3, 60)
            if not report.check("setup: the exporter counted every file of the scenario", ready,
                                "".join(open(os.path.join(tmp, n)).read()[-600:]
                                        for n in ("sim.log", "exporter.log"))):
                return report
            driver = browser()
            base = f"http://127.0.0.1:{exp_port}"
            run(report, driver, base, shots, config)
            # The feed lives in the store: a restart (same --storage.path) keeps it.
            stop(exporter)
            with open(config, "w") as f:
                f.write(good_config)
            exporter = start_exporter("exporter-restarted.log")
            back = e2e.wait_for(lambda: get_json(exp_port, "/api/v1/events?limit=1000")["events"], 30)
            driver.get(base + "/events")
            kinds = [li.get_attribute("data-kind")
                     for li in driver.find_elements(By.CSS_SELECTOR, "#events li")]
            report.check("restart: the feed survives a restart of the exporter",
                         bool(back) and kinds.count("new_file") >= 3, str(kinds))
        finally:
            if driver is not None:
                driver.quit()
            stop(exporter)
            stop(sim)
    print(f"screenshots in {shots}")
    print(f"browser test took {time.monotonic() - began:.1f} s")
    return report


if __name__ == "__main__":
    result = main()
    print(f"{result.passed} passed, {result.failed} failed")
    sys.exit(1 if result.failed else 0)
