// One process-wide thread pool: static partitioning, the caller takes part.
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "core.h"

namespace qf {
namespace {

thread_local bool t_in_pool_task = false;

class Pool {
 public:
  ~Pool() { resize(1); }

  int size() const { return size_.load(std::memory_order_relaxed); }

  void resize(int n) {
    std::lock_guard<std::mutex> g(submit_);
    resize_locked(n);
  }

  void run(int max_threads, const std::function<void(int, int)>& fn) {
    if (t_in_pool_task || max_threads <= 1) {
      fn(0, 1);
      return;
    }
    std::unique_lock<std::mutex> g(submit_);
    int nt = std::min(max_threads, static_cast<int>(workers_.size()) + 1);
    if (nt <= 1) {
      g.unlock();
      fn(0, 1);
      return;
    }
    {
      std::lock_guard<std::mutex> lk(m_);
      job_ = &fn;
      job_threads_ = nt;
      remaining_ = nt - 1;
      generation_++;
    }
    cv_.notify_all();
    t_in_pool_task = true;
    fn(0, nt);
    t_in_pool_task = false;
    std::unique_lock<std::mutex> lk(m_);
    done_cv_.wait(lk, [&] { return remaining_ == 0; });
    job_ = nullptr;
  }

 private:
  void resize_locked(int n) {
    if (n < 1) n = 1;
    int want = n - 1;
    if (static_cast<int>(workers_.size()) == want) return;
    {
      std::lock_guard<std::mutex> lk(m_);
      stop_ = true;
      generation_++;
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
    workers_.clear();
    uint64_t gen;
    {
      std::lock_guard<std::mutex> lk(m_);
      stop_ = false;
      gen = generation_;
    }
    // Each worker starts from the generation current now: a job submitted
    // before it first takes the lock is still seen as new (no lost wake-up).
    for (int i = 0; i < want; i++) workers_.emplace_back([this, i, gen] { loop(i + 1, gen); });
    size_.store(want + 1);
  }

  void loop(int index, uint64_t seen) {
    t_in_pool_task = true;
    for (;;) {
      const std::function<void(int, int)>* job;
      int nt;
      {
        std::unique_lock<std::mutex> lk(m_);
        cv_.wait(lk, [&] { return stop_ || generation_ != seen; });
        if (stop_) return;
        seen = generation_;
        job = job_;
        nt = job_threads_;
      }
      if (job && index < nt) {
        (*job)(index, nt);
        std::lock_guard<std::mutex> lk(m_);
        if (--remaining_ == 0) done_cv_.notify_all();
      }
    }
  }

  std::mutex submit_;  // one job at a time; also guards workers_
  std::mutex m_;
  std::condition_variable cv_, done_cv_;
  std::vector<std::thread> workers_;
  const std::function<void(int, int)>* job_ = nullptr;
  int job_threads_ = 1;
  int remaining_ = 0;
  uint64_t generation_ = 0;
  bool stop_ = false;
  std::atomic<int> size_{1};
};

int detect_physical_cores() {
#if !defined(__linux__)
  // macOS and others: no affinity mask or sysfs topology; logical CPUs
  // (Apple silicon has no SMT).
  return std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
#else
  cpu_set_t set;
  CPU_ZERO(&set);
  int logical = 0;
  std::set<std::string> cores;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    for (int c = 0; c < CPU_SETSIZE; c++) {
      if (!CPU_ISSET(c, &set)) continue;
      logical++;
      std::ifstream f("/sys/devices/system/cpu/cpu" + std::to_string(c) + "/topology/thread_siblings_list");
      std::string s;
      if (f && std::getline(f, s)) cores.insert(s);
      else cores.insert("cpu" + std::to_string(c));
    }
  }
  int n = cores.empty() ? static_cast<int>(std::thread::hardware_concurrency()) : static_cast<int>(cores.size());
  if (logical > 0 && n > logical) n = logical;
  return std::max(1, n);
#endif
}

Pool& pool() {
  static Pool* p = []() {
    Pool* pp = new Pool();  // leaked on purpose: workers must outlive static destructors
    pp->resize(default_num_threads());
    return pp;
  }();
  return *p;
}

}  // namespace

int default_num_threads() {
  static const int n = []() {
    const char* e = std::getenv("QUANTFACE_THREADS");
    if (e && *e) {
      int v = std::atoi(e);
      if (v >= 1 && v <= 1024) return v;
    }
    return detect_physical_cores();
  }();
  return n;
}

int num_threads() { return pool().size(); }
void set_num_threads(int n) { pool().resize(n <= 0 ? default_num_threads() : n); }

void parallel_run(int max_threads, const std::function<void(int, int)>& fn) { pool().run(max_threads, fn); }

void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  if (grain < 1) grain = 1;
  if (t_in_pool_task) {
    fn(0, n);
    return;
  }
  int64_t chunks = (n + grain - 1) / grain;
  int nt = static_cast<int>(std::min<int64_t>(chunks, num_threads()));
  if (nt <= 1) {
    fn(0, n);
    return;
  }
  parallel_run(nt, [&](int t, int T) {
    int64_t b = n * t / T, e = n * (t + 1) / T;
    if (b < e) fn(b, e);
  });
}

}  // namespace qf
