using NUnit.Framework;
using UVm.Faults;
using UVm.Frames;
using UVm.Io;
using UVm.Spaces;
using UVm.Tests.Faults;

namespace UVm.Tests.Hardening;

/// <summary>
/// Findings 6-8 and 13 of the trust-boundary review, and the handler contract: a page-fault
/// handler is user code and may lie, recurse, throw, block or dispose its space. None of it may
/// hang UVm, overflow the stack, or leave the space inconsistent.
/// </summary>
[NonParallelizable]
public sealed class HostileHandlers : GuestFixture
{
    [Test, CancelAfter(30_000)]
    public void A_handler_that_keeps_one_page_resident_cannot_make_a_straddling_value_spin()
    {
        // Each call maps the faulting page and unmaps the other: the 8-byte access at the page
        // boundary faults on alternate pages forever, at changing addresses.
        int calls = 0;
        Space.RegisterPageFaultHandler(MoveTheHole(() => ++calls));
        var reader = Space.Reader(Va + Page - 4, 8);
        IoResult<ulong> r = reader.ReadVal<ulong>();
        Assert.That(r.Error, Is.EqualTo(UVmError.PageFault));
        Assert.That(calls, Is.LessThanOrEqualTo(FallibleIo.MaxRetriesWithoutProgress), "the bound counts every retry of the access");
        Assert.That(calls, Is.GreaterThanOrEqualTo(2), "precondition: the handler really moved the hole around");
    }

    [Test, CancelAfter(30_000)]
    public void A_copy_that_progresses_between_faults_is_not_cut_by_the_retry_bound()
    {
        int calls = 0;
        Space.RegisterPageFaultHandler(MoveTheHole(() => ++calls));
        // Every resolution lets the copy move on (it never needs the page given up again), so the
        // bound, which counts retries without progress, does not cut it short.
        var writer = Space.Writer(Va, 2 * Page);
        CopyResult r = writer.WriteFallible(new byte[2 * Page]);
        Assert.That(r.IsOk, Is.True);
        Assert.That(r.Bytes, Is.EqualTo(2 * Page));
        Assert.That(calls, Is.EqualTo(2));
    }

    [Test, CancelAfter(30_000)]
    public void A_handler_that_reads_the_faulting_address_does_not_recurse()
    {
        int calls = 0, innerFailures = 0;
        Space.RegisterPageFaultHandler((VmSpace s, in PageFaultInfo info) =>
        {
            calls++;
            var inner = s.Reader(info.Address & ~7UL, 8);
            if (!inner.ReadVal<ulong>().IsOk) innerFailures++;
            Assert.That(s.HandlePageFault(info.Address, info.Access), Is.False, "a nested resolution of the same space is refused");
            return false;
        });
        var reader = Space.Reader(Va, 8);
        IoResult<ulong> r = reader.ReadVal<ulong>();
        Assert.That(r.Error, Is.EqualTo(UVmError.PageFault));
        Assert.That(r.Fault!.Value.Kind, Is.EqualTo(PageFaultKind.NotPresent));
        Assert.That(calls, Is.EqualTo(1), "the handler ran once: its own fault was not resolved through it");
        Assert.That(innerFailures, Is.EqualTo(1), "its own read failed as a fault");
    }

    [Test, CancelAfter(30_000)]
    public void A_handler_may_touch_another_space_whose_handler_touches_the_first()
    {
        using var other = new VmSpace(new VmSpaceOptions { Size = 1UL << 30, Pool = Pool });
        int calls = 0, otherCalls = 0;
        Space.RegisterPageFaultHandler((VmSpace s, in PageFaultInfo info) =>
        {
            calls++;
            other.Activate();
            var r = other.Reader(Va, 8);
            bool ok = r.ReadVal<ulong>().IsOk;
            s.Activate();
            return false;
        });
        other.RegisterPageFaultHandler((VmSpace s, in PageFaultInfo info) =>
        {
            otherCalls++;
            Space.Activate();
            var r = Space.Reader(Va, 8);
            Assert.That(r.ReadVal<ulong>().IsOk, Is.False, "back in the first space: not resolved again");
            s.Activate();
            return false;
        });
        var reader = Space.Reader(Va, 8);
        Assert.That(reader.ReadVal<ulong>().Error, Is.EqualTo(UVmError.PageFault));
        Assert.That((calls, otherCalls), Is.EqualTo((1, 1)));
    }

    [Test, CancelAfter(30_000)]
    public void A_handler_that_throws_propagates_and_leaves_the_space_consistent()
    {
        MapPatterned(Va);
        Space.RegisterPageFaultHandler((VmSpace s, in PageFaultInfo info) => throw new FormatException("handler bug"));
        long unresolved = Space.UnresolvedFaults;
        var buffer = new byte[16];
        Assert.Throws<FormatException>(() =>
        {
            var reader = Space.Reader(Va + Page - 8, 16);
            reader.ReadFallible(buffer);
        });
        Assert.That(Space.UnresolvedFaults, Is.EqualTo(unresolved + 1));
        Assert.That(Space.CheckHostMirror(), Is.Empty);

        // Nothing is left held: cursors, resolution, the fault stripe, the gate.
        Assert.That(Cursor.HeldByCurrentThread, Is.Zero);
        using (Cursor c = Space.Cursor(VaddrRange.FromLength(0, Space.Size))) { }
        Assert.Throws<FormatException>(() => Space.HandlePageFault(Va + Page, PageFaultAccess.Read));
        var again = Space.Reader(Va, 8);
        Assert.That(again.ReadVal<ulong>().Value, Is.EqualTo(BitConverter.ToUInt64(PatternOf(Va, 8))));
        bool done = false;
        var t = new Thread(() =>
        {
            Space.Activate();
            var r = Space.Reader(Va + Page, 8);
            try { r.ReadVal<ulong>(); } catch (FormatException) { done = true; }
        });
        t.Start();
        Assert.That(t.Join(30_000), Is.True, "another thread faulting in the same region is not blocked by the failed call");
        Assert.That(done, Is.True);
    }

    [Test, CancelAfter(60_000)]
    public void A_handler_that_disposes_its_space_while_another_thread_faults_in_the_region_does_not_deadlock()
    {
        using var inHandler = new ManualResetEventSlim();
        using var otherWaiting = new ManualResetEventSlim();
        CopyResult? otherResult = null;
        Space.RegisterPageFaultHandler((VmSpace s, in PageFaultInfo info) =>
        {
            if (info.Address >= Va + Page) return false; // the other thread's fault, if it ever gets here
            inHandler.Set();
            Assert.That(otherWaiting.Wait(30_000), Is.True, "the other thread started its access");
            Thread.Sleep(20); // let it reach the region's wait (not needed for correctness)
            s.Dispose();
            return true;
        });
        var other = new Thread(() =>
        {
            Space.Activate();
            Assert.That(inHandler.Wait(30_000), Is.True);
            var w = Space.Writer(Va + Page, 8); // same 2 MiB region
            otherWaiting.Set();
            otherResult = w.WriteFallible(new byte[8]);
        })
        { IsBackground = true };
        other.Start();
        var reader = Space.Reader(Va, 8);
        IoResult<ulong> r = reader.ReadVal<ulong>();
        Assert.That(other.Join(30_000), Is.True, "the other thread's access ended: no deadlock");
        Assert.That(r.Error, Is.EqualTo(UVmError.PageFault), "the space went away under the access");
        Assert.That(otherResult?.Error, Is.EqualTo(UVmError.PageFault));
        Assert.That(otherResult?.Bytes, Is.Zero);
        Assert.That(Space.IsDisposed, Is.True);
    }

    [Test, CancelAfter(30_000)]
    public void A_fault_under_a_held_cursor_reports_what_the_table_says()
    {
        MapPatterned(Va, PageFlags.R);
        using (Cursor c = Space.Cursor(VaddrRange.FromLength(Va + 16 * Page, Page)))
        {
            var writer = Space.Writer(Va, 8);
            IoResult<ulong> w = writer.WriteVal(1UL);
            Assert.That(w.Fault?.Kind, Is.EqualTo(PageFaultKind.Protection), "a write to a mapped read-only page");
            var reader = Space.Reader(Va + Page, 8);
            Assert.That(reader.ReadVal<ulong>().Fault?.Kind, Is.EqualTo(PageFaultKind.NotPresent));
            var exec = Space.HandlePageFault(Va, PageFaultAccess.Write);
            Assert.That(exec, Is.False, "never resolved under a held cursor");
        }
        var after = Space.Writer(Va, 8);
        Assert.That(after.WriteVal(1UL).Fault?.Kind, Is.EqualTo(PageFaultKind.Protection), "the same without the cursor");
    }

    /// <summary>
    /// A handler that maps the faulting one of the two pages at <see cref="GuestFixture.Va"/> and
    /// unmaps the other, counting its calls through <paramref name="count"/> (it gives up past
    /// 1,000: the test's own safety net, never reached when the retry bound works).
    /// </summary>
    private static PageFaultHandler MoveTheHole(Func<int> count) => (VmSpace s, in PageFaultInfo info) =>
    {
        if (count() > 1000) return false;
        ulong page = info.Address & ~(Page - 1);
        ulong other = page == Va ? Va + Page : Va;
        using (CursorMut c = s.CursorMut(VaddrRange.FromLength(other, Page))) c.Unmap(Page);
        using UFrame f = s.Pool.AllocFrame();
        using (CursorMut c = s.CursorMut(VaddrRange.FromLength(page, Page))) c.Map(f, PageProperty.New(PageFlags.RW));
        return true;
    };
}
