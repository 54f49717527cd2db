using NUnit.Framework;
using UVm.Faults;
using UVm.Host;
using UVm.Io;
using UVm.Spaces;
using UVm.Tests.TestSupport;
using UVm.Interop;

namespace UVm.Tests.Faults;

/// <summary>
/// A thread that holds a live cursor never resolves a fault (it could wait on its own page-table
/// locks): its fallible access fails at once with <see cref="UVmError.PageFault"/>.
/// </summary>
[TestFixture, NonParallelizable]
public sealed class FaultsUnderHeldCursors : GuestFixture
{
    private const ulong Elsewhere = 0x2000_0000;

    [Test, CancelAfter(10_000)]
    public void A_thread_holding_a_cursor_fails_at_once_without_calling_the_handler()
    {
        MapPatterned(Va);
        var pager = new DemandPager();
        Space.RegisterPageFaultHandler(pager.Handle);
        byte[] dst = Filled(200, 0xEE);

        using (Space.Cursor(VaddrRange.FromLength(Elsewhere, Page)))
        {
            var reader = Space.Reader(Va + Page - 50, 200);
            CopyResult r = reader.ReadFallible(dst);
            Assert.That(r.Bytes, Is.EqualTo(50UL));
            Assert.That(r.Fault, Is.EqualTo(new PageFaultInfo(Va + Page, PageFaultAccess.Read, PageFaultKind.NotPresent, 11)));
        }
        Assert.That(pager.Calls, Is.Zero);
        Assert.That(Space.UnresolvedFaults, Is.EqualTo(1));

        var again = Space.Reader(Va + Page - 50, 200);
        Assert.That(again.ReadFallible(dst).IsOk, Is.True, "once the cursor is gone the handler resolves it");
        Assert.That(dst, Is.EqualTo(PatternOf(Va + Page - 50, 200)));
        Assert.That(pager.Calls, Is.EqualTo(1));
    }

    [Test, CancelAfter(10_000)]
    public void Even_a_spurious_fault_is_not_filled_while_a_cursor_is_held()
    {
        MapPatterned(Va);
        Libc.Mprotect(Space.HostBase + (nint)Va, (nuint)Page, Libc.PROT_NONE);

        using (Space.CursorMut(VaddrRange.FromLength(Elsewhere, Page)))
        {
            var reader = Space.Reader(Va, 8);
            Assert.That(reader.ReadVal<ulong>().Error, Is.EqualTo(UVmError.PageFault));
            Assert.That(Space.SpuriousFaults, Is.Zero);
            Assert.That(Space.HandlePageFault(Va, PageFaultAccess.Read), Is.False);
        }
        var after = Space.Reader(Va, 8);
        Assert.That(after.ReadVal<ulong>().IsOk, Is.True);
        Assert.That(Space.SpuriousFaults, Is.EqualTo(1));
    }

    [Test, CancelAfter(10_000)]
    public void A_cursor_of_another_space_counts_too()
    {
        var pager = new DemandPager();
        Space.RegisterPageFaultHandler(pager.Handle);
        using var other = new VmSpace(new VmSpaceOptions { Size = 2UL << 20, Pool = Pool });

        using (other.Cursor(VaddrRange.FromLength(0, Page)))
        {
            var reader = Space.Reader(Va, 8);
            Assert.That(reader.ReadVal<ulong>().Error, Is.EqualTo(UVmError.PageFault));
        }
        Assert.That(pager.Calls, Is.Zero);
    }

    [Test, CancelAfter(60_000)]
    public void A_cursor_held_by_another_thread_does_not_stop_this_one()
    {
        // With a page mapped there, the holder's cursor locks only the node of that 2 MiB region
        // (a cursor over nothing may lock a node high enough to cover Va as well).
        MapPatterned(Elsewhere);
        var pager = new DemandPager();
        Space.RegisterPageFaultHandler(pager.Handle);
        using var held = new ManualResetEventSlim();
        using var release = new ManualResetEventSlim();
        bool letGo = false; // set once the holder stops holding (told to, or after its long timeout)
        var holder = TestThread.Start("cursor holder", () =>
        {
            using (Space.Cursor(VaddrRange.FromLength(Elsewhere, Page)))
            {
                held.Set();
                release.Wait(TimeSpan.FromSeconds(45)); // a wrong wait of the fault ends here instead of hanging
                Volatile.Write(ref letGo, true);
            }
        });
        try
        {
            Deadlines.Wait(held, "the holder to open its cursor");
            var reader = Space.Reader(Va, 8);
            Assert.That(reader.ReadVal<ulong>().IsOk, Is.True);
            Assert.That(Volatile.Read(ref letGo), Is.False, "the fault waited for the other thread's cursor");
            Assert.That(pager.Calls, Is.EqualTo(1));
        }
        finally
        {
            release.Set();
            holder.Join();
        }
    }

    [Test, CancelAfter(90_000)]
    public void A_handler_that_touches_guest_memory_under_its_own_cursor_gets_a_fault_not_a_deadlock()
    {
        CopyResult? nested = null;
        Space.RegisterPageFaultHandler((VmSpace s, in PageFaultInfo info) =>
        {
            ulong page = info.Address & ~(Page - 1);
            using var frame = s.Pool.AllocFrame();
            using var cursor = s.CursorMut(VaddrRange.FromLength(page, Page));
            if (nested is null)
            {
                // Fault again, on a page of the very range this thread now holds locked.
                var inner = s.Reader(page + 16, 8);
                nested = inner.ReadFallible(new byte[8]);
            }
            cursor.Map(frame, PageProperty.New(PageFlags.RW));
            return true;
        });

        CopyResult? outer = null;
        var worker = Deadlines.Background("faulter", () =>
        {
            Space.Activate();
            var reader = Space.Reader(Va, 8);
            outer = reader.ReadFallible(new byte[8]);
        });
        worker.Start();
        Deadlines.Join(worker, "the nested fault to end (deadlock?)");

        Assert.That(nested, Is.EqualTo(new CopyResult(0, UVmError.PageFault,
            new PageFaultInfo(Va + 16, PageFaultAccess.Read, PageFaultKind.NotPresent, 11))));
        Assert.That(outer?.IsOk, Is.True);
        Assert.That(Space.HandledFaults, Is.EqualTo(1));
    }
}
