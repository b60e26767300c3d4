"""`python -m analysis.app_measure [all|dash|compare] [STUDENT]`: measure the real app end to end.

Starts `python app.py` on port 7862 (job runs in runs/app-measure unless GDL_RUNS_DIR says otherwise) and reports its
cold start, a 200-iteration DASH fine-tune through /distill_start on the shipped teacher, the cancel latency of a
second job, /compare latency (teacher 64 steps vs STUDENT and vs the teacher at 4 steps), and saves
assets/screenshot.png from headless Chromium. The numbers in the README and the closing notes came from this.
"""
import json
import os
import subprocess
import sys
import time
import urllib.request

from gradio_client import Client

port = 7862
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "GDL_RUNS_DIR": os.environ.get("GDL_RUNS_DIR", os.path.join(ROOT, "runs", "app-measure"))}
out = {}
t0 = time.time()
app = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
while True:
    try:
        if urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).status == 200: break
    except Exception: time.sleep(0.1)
out["cold_start_s"] = round(time.time() - t0, 2); print(out, flush=True)
c = Client(f"http://127.0.0.1:{port}/", verbose=False)
mode = sys.argv[1] if len(sys.argv) > 1 else "all"
if mode in ("all", "dash"):
    t1 = time.time()
    job = c.predict(method="dash", iterations=200, api_name="/distill_start")
    while True:
        st = c.predict(job_id=job, api_name="/distill_status")
        if st["state"] in ("done", "failed", "cancelled"): break
        time.sleep(2)
    out["dash_200_s"] = round(time.time() - t1, 1); out["dash_state"] = st["state"]; out["dash_model"] = str(st.get("model")); print(out, flush=True)
    # cancel latency on a second job
    job2 = c.predict(method="dash", iterations=2000, api_name="/distill_start")
    while c.predict(job_id=job2, api_name="/distill_status")["step"] < 4: time.sleep(1)
    t2 = time.time(); st2 = c.predict(job_id=job2, api_name="/distill_cancel"); out["cancel_s"] = round(time.time() - t2, 2); out["cancel_state"] = st2["state"]
    print(out, flush=True)
if mode in ("all", "compare"):
    student = sys.argv[2] if len(sys.argv) > 2 else "00001-dash"
    c.predict(teacher="fmnist-teacher", student=student, class_label=0, guidance=2.0, teacher_steps=64, student_steps=64, seed=0, api_name="/compare")
    ts = []
    for seed in (1, 2, 3):
        t3 = time.time()
        c.predict(teacher="fmnist-teacher", student=student, class_label=seed, guidance=2.0, teacher_steps=64, student_steps=64, seed=seed, api_name="/compare")
        ts.append(time.time() - t3)
    out["compare_teacher64_vs_student_s"] = sorted(ts)[1]
    t3 = time.time()
    c.predict(teacher="fmnist-teacher", student="fmnist-teacher", class_label=4, guidance=2.0, teacher_steps=64, student_steps=4, seed=4, api_name="/compare")
    out["compare_teacher64_vs_teacher4_s"] = round(time.time() - t3, 2)
    print(out, flush=True)
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = b.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(f"http://127.0.0.1:{port}/", wait_until="domcontentloaded")
        page.get_by_text("Guided Distillation Lab").first.wait_for(timeout=30_000)
        page.locator("#compare-button").click()
        page.get_by_text("Speedup").wait_for(timeout=300_000)
        page.locator("#student-image img").first.wait_for(state="visible", timeout=60_000)
        time.sleep(2)
        page.screenshot(path=os.path.join(ROOT, "assets", "screenshot.png"), full_page=False)
        b.close()
print(json.dumps(out), flush=True)
app.terminate()
