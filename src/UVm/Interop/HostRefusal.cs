namespace UVm.Interop;

/// <summary>The host calls UVm makes, named for <see cref="HostRefusal"/>.</summary>
internal enum HostCallSite
{
    Mmap,
    Munmap,
    Mprotect,
    Madvise,
    MemfdCreate,
    Ftruncate,
    Fallocate,
    Pwritev,
    Dup,
    PagemapScan,
}

/// <summary>
/// The seam through which tests make the host refuse a call: every call of <see cref="Libc"/>
/// asks <see cref="Refuses"/> first, and a refused call returns the host's failure value with
/// the chosen <c>errno</c>, without reaching the host. Nothing else of the host is replaced:
/// every other call, before and after, is real.
/// </summary>
/// <remarks>
/// A refusal is armed for one thread (the one that armed it: other threads of the process,
/// the runtime's own included, never see it) and for one call site; it lets
/// <c>skip</c> calls through, then refuses <c>count</c> calls. Disarmed, the check is one
/// static read.
/// </remarks>
internal static class HostRefusal
{
    private static Plan? s_plan;

    /// <summary>Set while the calling thread makes calls that are UVm's own checks of the host, never refused (see <see cref="Unrefused"/>).</summary>
    [ThreadStatic]
    private static bool t_unrefused;

    /// <summary>
    /// Runs <paramref name="probe"/> with no refusal on the calling thread: for the one-time
    /// checks of what the host supports, whose answer is kept for the process and must not
    /// depend on a test's refusal armed when they happen to run.
    /// </summary>
    internal static T Unrefused<T>(Func<T> probe)
    {
        bool was = t_unrefused;
        t_unrefused = true;
        try { return probe(); }
        finally { t_unrefused = was; }
    }

    internal sealed class Plan(HostCallSite site, int errno, int skip, int count, int threadId)
    {
        internal readonly HostCallSite Site = site;
        internal readonly int Errno = errno;
        internal readonly int ThreadId = threadId;
        internal int Skip = skip;
        internal int Count = count;
        internal int Refused;
    }

    /// <summary>Whether the call about to be made at <paramref name="site"/> is refused; sets <c>errno</c> when it is.</summary>
    internal static bool Refuses(HostCallSite site)
    {
        Plan? plan = Volatile.Read(ref s_plan);
        if (plan == null || plan.Site != site || plan.ThreadId != Environment.CurrentManagedThreadId || t_unrefused) return false;
        if (plan.Skip > 0)
        {
            plan.Skip--;
            return false;
        }
        if (plan.Count <= 0) return false;
        plan.Count--;
        plan.Refused++;
        System.Runtime.InteropServices.Marshal.SetLastPInvokeError(plan.Errno);
        System.Runtime.InteropServices.Marshal.SetLastSystemError(plan.Errno);
        return true;
    }

    /// <summary>
    /// Refuses, on the calling thread, the calls at <paramref name="site"/> after the first
    /// <paramref name="skip"/>, <paramref name="count"/> times, with <paramref name="errno"/>,
    /// until the returned scope is disposed. Its <see cref="Scope.Refused"/> says how many were.
    /// </summary>
    internal static Scope Arm(HostCallSite site, int errno, int skip = 0, int count = int.MaxValue)
    {
        var plan = new Plan(site, errno, skip, count, Environment.CurrentManagedThreadId);
        if (Interlocked.CompareExchange(ref s_plan, plan, null) != null)
            throw new InvalidOperationException("a host refusal is already armed");
        return new Scope(plan);
    }

    /// <summary>An armed refusal; disposing it disarms it.</summary>
    internal readonly struct Scope : IDisposable
    {
        private readonly Plan _plan;

        internal Scope(Plan plan) => _plan = plan;

        /// <summary>Calls refused so far.</summary>
        internal int Refused => _plan.Refused;

        public void Dispose() => Interlocked.CompareExchange(ref s_plan, null, _plan);
    }
}
