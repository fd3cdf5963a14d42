#!/usr/bin/python3
"""stage_costs.py — per-event cost and Redis bytes of sales and retention.

    FUNNEL_BUILD_DIR=build /usr/bin/python3 bench/stage_costs.py [DEALS] [ORDERS]

Starts a private redis-server, funnel-sales and funnel-retention (the e2e
kit: temp dir, free ports, everything stopped at the end), then reports:
  - bytes per deal: DEALS deals opened (ids L<lead>-1, as from lead.sql),
    given 2 interactions, an offer, a stage change and closed won (a short
    history: 6 entries); MEMORY USAGE of every
    key, grouped by kind (the token after the prefix);
  - bytes per customer: the DEALS customers those wins made;
  - the big customer: ORDERS past orders with ids (in 1000-order batches),
    then the time of one more 1000-order batch, of a single
    customer.activity and a single customer.order (PUBLISH round trip,
    median of 5, the client's clock).
Figures only, no pass/fail: a benchmark (run by hand, not by ctest)."""
import os
import re
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "e2e"))
import funnel_e2e  # noqa: E402
from funnel_e2e import FunnelTestCase, event, wait_until  # noqa: E402

DEALS = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
ORDERS = int(sys.argv[2]) if len(sys.argv) > 2 else 25000


def kinds(r, svc):
    """MEMORY USAGE of every key of svc, by kind: {kind: (keys, bytes)}."""
    out = {}
    for key in r.scan_iter(match="{funnel:%s*" % svc, count=1000):
        k = key.decode()
        m = re.match(r"\{funnel:[a-z]+(?::\d+)?\}:([a-z_]+)", k)
        kind = m.group(1) if m else "?"
        size = r.memory_usage(key, samples=0) or 0
        keys, total = out.get(kind, (0, 0))
        out[kind] = (keys + 1, total + size)
    return out


class Costs(FunnelTestCase):
    def runTest(self):
        sales_d = self.daemon("sales")
        sales = self.wait_ready("sales")
        self.daemon("retention")
        ret = self.wait_ready("retention")
        r = self.redis.client()
        # Deals with a short history, won: each makes a customer
        for start in range(0, DEALS, 100):
            batch = []
            for i in range(start, min(DEALS, start + 100)):
                # Ids as lead.sql gives them (L<lead>-<n>): the deal needs no route
                d, lead = "Llead%06d-1" % i, "lead%06d" % i
                batch += [event("deal.open", {"deal": d, "lead": lead, "amount": 10000}),
                          event("deal.interaction", {"deal": d, "kind": "call", "outcome": "positive"}),
                          event("deal.interaction", {"deal": d, "kind": "demo"}),
                          event("deal.offer", {"deal": d, "amount": 12000, "discount_pct": 5}),
                          event("deal.stage", {"deal": d, "stage": "proposal"}),
                          event("deal.close", {"deal": d, "outcome": "won"})]
            sales.ok("PUBLISH", batch, timeout=60)
        wait_until(lambda: self.stats("retention").get("customers", 0) == DEALS, timeout=120,
                   what="%d customers" % DEALS)
        for svc, per, names in (("sales", DEALS, None), ("retention", DEALS, None)):
            k = kinds(r, svc)
            print("%s: bytes per entity (%d), by key kind:" % (svc, per))
            for kind, (keys, total) in sorted(k.items(), key=lambda x: -x[1][1]):
                print("   %-8s keys %7d  bytes %10d  per entity %8.1f" % (kind, keys, total, total / per))
        # The big customer
        big = "lead000000"
        n = 0
        t0 = time.time()
        while n < ORDERS:
            batch = [event("customer.order", {"customer": big, "amount": 100, "order": "o%07d" % (n + i)})
                     for i in range(min(1000, ORDERS - n))]
            ret.ok("PUBLISH", batch, timeout=60)
            n += len(batch)
        print("retention: %d orders for one customer loaded in %.1f s" % (n, time.time() - t0))
        times = []
        for rep in range(5):
            batch = [event("customer.order", {"customer": big, "amount": 100,
                                               "order": "x%d-%04d" % (rep, i)}) for i in range(1000)]
            t = time.perf_counter()
            ret.ok("PUBLISH", batch, timeout=60)
            times.append((time.perf_counter() - t) * 1000)
        print("retention: one 1000-order batch for a customer with >= %d orders: median %.1f ms "
              "(all: %s)" % (ORDERS, statistics.median(times), ", ".join("%.1f" % x for x in times)))
        # The same batch for a customer with one past order, and 1000
        # activities (no order ids): the cost does not grow with past orders
        for label, make in (("a customer with 1 past order", lambda rep, i: event(
                                "customer.order", {"customer": "lead000001", "amount": 100,
                                                   "order": "z%d-%04d" % (rep, i)})),
                            ("1000 customer.activity, big customer", lambda rep, i: event(
                                "customer.activity", {"customer": big, "kind": "login"}))):
            times = []
            for rep in range(5):
                batch = [make(rep, i) for i in range(1000)]
                t = time.perf_counter()
                ret.ok("PUBLISH", batch, timeout=60)
                times.append((time.perf_counter() - t) * 1000)
            print("retention: one 1000-event batch, %s: median %.1f ms" % (label, statistics.median(times)))
        for etype, data in (("customer.activity", {"customer": big, "kind": "login"}),
                            ("customer.order", {"customer": big, "amount": 5})):
            times = []
            for rep in range(5):
                d = dict(data)
                if etype == "customer.order":
                    d["order"] = "y%d" % rep
                t = time.perf_counter()
                ret.ok("PUBLISH", event(etype, d))
                times.append((time.perf_counter() - t) * 1000)
            print("retention: one %s for that customer: median %.2f ms" % (etype, statistics.median(times)))
        c = ret.ok("GET", {"kind": "customer", "id": big})
        print("retention: the big customer has %d orders" % c["orders"])
        del sales_d


if __name__ == "__main__":
    import unittest
    suite = unittest.TestSuite([Costs()])
    ok = unittest.TextTestRunner(verbosity=1).run(suite).wasSuccessful()
    sys.exit(0 if ok else 1)
