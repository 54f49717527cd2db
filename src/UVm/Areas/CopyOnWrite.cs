using UVm.Spaces;

namespace UVm.Areas;

/// <summary>
/// The write-fault policy of private pages shared after <see cref="AddressSpace.Fork"/>: the
/// page gets a copy of its frame, or write access to it when it holds the frame's last reference
/// (a takeover); the same is done for the shared pages of its fault-around window.
/// </summary>
/// <remarks>
/// Why around: a copy goes to the writer's region chunk, not beside the shared frames, so pages
/// copied one by one alternate with pages left shared and every alternation costs a host
/// mapping (VMA); so do pages given W one by one amid read-only neighbours. Random writes to half
/// the pages of a forked 1 GiB would pass <c>vm.max_map_count</c>. Resolved a window at a time,
/// runs are at least a window long. The price is a copy of up to a window of pages that nobody
/// has written yet (<see cref="AddressSpace.FaultAroundPages"/> = 1 turns it off).
/// </remarks>
internal static class CopyOnWrite
{
    /// <summary>
    /// A page of the window that lacks W: its shared frame and, unless it holds the frame's last
    /// reference (then it is taken over: no <paramref name="Copy"/>), the frame it is copied into.
    /// </summary>
    private readonly record struct WindowPage(ulong Va, ulong Shared, OwnedFrame? Copy);

    /// <summary>How the faulting page itself was resolved.</summary>
    private enum Outcome { None, Copied, TakenOver }

    /// <summary>
    /// Resolves a write to private page <paramref name="page"/> of <paramref name="area"/> that
    /// lacks W, and does the same around it in its fault-around window: shared pages are copied,
    /// pages already private get W back. The window is a bonus and stops at the first refusal;
    /// the faulting page's own refusal propagates. Every frame allocated for a copy that no
    /// mapping took is released.
    /// </summary>
    internal static bool Resolve(AddressSpace owner, VmArea area, ulong page)
    {
        VmSpace space = owner.Space;
        VaddrRange window = owner.WindowOf(area, page);
        PageProperty prop = PageProperty.New(area.Flags);
        var pages = new List<WindowPage>();
        Outcome faulting = Outcome.None; // stays None when another thread made the page writable meanwhile
        int takenOver = 0, copied = 0;
        using (CursorMut c = space.CursorMut(window))
        {
            try
            {
                // The faulting page first: the window is a bonus, and stops at the first refusal.
                foreach (ulong va in WindowOrder(window, page))
                {
                    c.Jump(va);
                    PageSlot slot = c.QuerySlot();
                    if (!slot.IsTracked || slot.Allows(PageFlags.W)) continue;
                    if (va != page && owner.IsWatchedUnwritten(va)) continue; // its first write must fault
                    try
                    {
                        // The last reference gets write access, no copy; so does a host copy (the host copies
                        // it, and its contents may be the arena's already); else a frame for the copy.
                        OwnedFrame? copy = slot.IsHostCopy || space.Pool.ReferenceCountOf(slot.Paddr) == 1 ? null : owner.Chunks.AllocFor(va, willOverwrite: true);
                        pages.Add(new WindowPage(va, slot.Paddr, copy));
                    }
                    catch (UVmException e) when ((e.Error is UVmError.NoMemory or UVmError.HostMappingLimit) && va != page)
                    {
                        break;
                    }
                }
                // Contents through the memfd, so the new frames' only host page-table entries are
                // the ones their mappings install; then the changes, in address order so runs merge.
                pages.Sort((x, y) => x.Va.CompareTo(y.Va));
                CopyContents(space, pages);
                foreach (WindowPage p in pages)
                {
                    c.Jump(p.Va);
                    try
                    {
                        if (p.Copy is null)
                        {
                            c.ProtectNext(Paging.PageSize, (ref PageFlags f, ref CachePolicy _) => f |= PageFlags.W);
                            takenOver++;
                            if (p.Va == page) faulting = Outcome.TakenOver;
                            continue;
                        }
                        p.Copy.MapInto(c, prop, populate: true); // the mapping's from here, or dropped if refused
                        copied++;
                        if (p.Va == page) faulting = Outcome.Copied;
                    }
                    catch (UVmException e) when (e.Error == UVmError.HostMappingLimit && p.Va != page)
                    {
                        // Refused (the frame is dropped): this neighbour stays shared.
                    }
                }
            }
            finally
            {
                foreach (WindowPage p in pages) p.Copy?.Dispose(); // the copies no mapping took (none, unless this failed)
            }
        }
        // A page another thread made writable meanwhile counts as rights restored (see AreaStats.SharedWriteRestores).
        if (faulting == Outcome.Copied) Interlocked.Increment(ref owner.Stats._cowCopies);
        else if (faulting == Outcome.TakenOver) Interlocked.Increment(ref owner.Stats._cowTakeovers);
        Interlocked.Add(ref owner.Stats._cowPages, copied);
        Interlocked.Add(ref owner.Stats._cowTakeoverPages, takenOver);
        return true;
    }

    /// <summary>The pages of <paramref name="window"/>, <paramref name="page"/> first, then the others in address order.</summary>
    private static IEnumerable<ulong> WindowOrder(VaddrRange window, ulong page)
    {
        yield return page;
        for (ulong va = window.Start; va < window.End; va += Paging.PageSize)
            if (va != page) yield return va;
    }

    /// <summary>Copies each shared frame into its copy (takeovers have none), one host call per run of copies contiguous in <c>Paddr</c>.</summary>
    private static void CopyContents(VmSpace space, List<WindowPage> pages)
    {
        Span<ulong> sources = stackalloc ulong[pages.Count];
        for (int i = 0; i < pages.Count; i++) sources[i] = pages[i].Shared;
        int run = 0;
        for (int i = 1; i <= pages.Count; i++)
        {
            bool continues = i < pages.Count && pages[i - 1].Copy is { } previous && pages[i].Copy is { } next && next.Paddr == previous.Paddr + Paging.PageSize;
            if (continues) continue;
            if (pages[run].Copy is { } first) space.Pool.CopyFrames(first.Paddr, sources[run..i]);
            run = i;
        }
    }
}
