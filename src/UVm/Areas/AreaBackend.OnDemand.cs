using System.Runtime.ExceptionServices;
using UVm.Spaces;

namespace UVm.Areas;

/// <summary>
/// Fills one page of an on-demand area (<see cref="AreaBackend.OnDemand"/>) on its first access:
/// writes the page's contents into <paramref name="page"/> and returns true, or returns false to
/// decline (the access then fails).
/// </summary>
/// <param name="va">Guest address of the page (page aligned).</param>
/// <param name="page">The page's new frame, one page long, zeroed: what is written is what the guest
/// sees. Valid only during the call.</param>
/// <returns>True to map the page; false to decline: nothing is mapped, and the access fails with
/// <see cref="UVmError.PageFault"/>, <see cref="Faults.PageFaultKind.NotPresent"/> at the faulting
/// address and the exact count of bytes done.</returns>
/// <remarks>
/// <para><b>Where it runs.</b> On the faulting thread (or the one calling
/// <see cref="AddressSpace.Prefault"/> or <see cref="VmSpace.HandlePageFault(ulong, Faults.PageFaultAccess)"/>),
/// never in a signal handler, under the fault stripe of the page's 2 MiB region and the address
/// space's area lock (read). Calls for pages of different regions (or different spaces, or the
/// forks of a space, which share the callback) run in parallel on whatever threads fault: it
/// must be thread-safe. Calls for pages of one region of one space run one at a time.</para>
/// <para><b>What it must not do.</b> Map, unmap or protect in the same address space (those wait
/// for the area lock the call holds: a deadlock); access the same address space (a fault of that
/// space on this thread is not resolved: the access fails); wait for another thread's access to
/// the same region of the same space, or for that space's <c>Dispose</c>. It may block for a while
/// (reading a file or the network), touch other spaces, and dispose the space: the access then
/// fails as a fault and nothing is mapped.</para>
/// <para><b>Exceptions.</b> An exception it throws propagates out of the access that faulted (as
/// a page-fault handler's does); the frame goes back to the pool and nothing is mapped. An
/// <see cref="ObjectDisposedException"/> thrown while the space is being disposed fails the access
/// as a fault instead.</para>
/// </remarks>
public delegate bool PageFill(ulong va, Span<byte> page);

public abstract partial record AreaBackend
{
    /// <summary>
    /// Private memory filled by <paramref name="Fill"/> on first access, one page at a time: the
    /// userfaultfd model (lazy restore of a snapshot from a file or the network). Nothing is
    /// mapped when the area is; a page's first fault gives it a frame, has
    /// <paramref name="Fill"/> write it (see <see cref="PageFill"/> for where it runs and its
    /// rules) and maps it. Filled pages are ordinary private frames: shared copy-on-write by a
    /// fork (whose unfilled pages call the same <paramref name="Fill"/>), never filled twice
    /// while mapped; an unmapped page is filled again on its next access.
    /// </summary>
    /// <param name="Fill">The callback.</param>
    public sealed record OnDemand(PageFill Fill) : AreaBackend
    {
        internal override void Validate(VmSpace space, ulong length)
        {
            if (Fill is null) ThrowHelper.Argument("the fill callback is null", ParamName);
        }

        internal override bool HasPrivatePages => true;

        internal override void MapAtOnce(AddressSpace owner, VmArea area) { } // pages come with their first fault

        internal override unsafe bool ResolveNotPresent(AddressSpace owner, VmArea area, ulong page)
        {
            using OwnedFrame frame = owner.Chunks.AllocFor(page); // released unless a mapping takes it
            bool filled;
            try
            {
                // SAFETY: the frame is allocated and this call holds its only reference until the
                // mapping takes it, so its page of the linear map (which lives as long as the pool,
                // and the pool cannot be disposed while a frame is in use) is this call's alone;
                // the span does not outlive the callback (a ref struct it cannot keep).
                filled = Fill(page, new Span<byte>(owner.Space.Pool.LinearAddress(frame.Paddr), (int)Paging.PageSize));
            }
            catch (Exception e)
            {
                throw new FillFailed(e);
            }
            if (!filled)
            {
                Interlocked.Increment(ref owner.Stats._onDemandDeclined);
                return false;
            }
            using (CursorMut c = owner.Space.CursorMut(new VaddrRange(page, page + Paging.PageSize)))
            {
                if (c.QuerySlot().IsMapped) return true; // mapped through the space meanwhile: keep that
                frame.MapInto(c, owner.PropFor(area, page), populate: true);
            }
            Interlocked.Increment(ref owner.Stats._onDemandFills);
            return true;
        }

        internal override string Describe() => "on demand (filled by a callback)";
    }

    /// <summary>An exception a <see cref="PageFill"/> threw, carried past the fault handler's own catches and rethrown as it was (<see cref="Rethrow"/>).</summary>
    internal sealed class FillFailed(Exception inner) : Exception("a page fill callback threw", inner)
    {
        /// <summary>Throws the callback's exception with its own stack trace.</summary>
        internal void Rethrow() => ExceptionDispatchInfo.Throw(InnerException!);
    }
}
