using UVm.Faults;

namespace UVm.Spaces;

/// <summary>
/// An activation of a space on one thread, made by <see cref="VmSpace.Activate"/>: disposing it
/// makes active again what was active on the thread before (another space, or none).
/// </summary>
/// <remarks>
/// <para><b>Await.</b> Activation belongs to a thread, and a continuation after <c>await</c> may run
/// on another one. The scope is a <c>ref struct</c>, so the compiler refuses to keep it across an
/// <c>await</c> (error CS4007): <c>using (space.Activate()) { await ...; }</c> does not compile.
/// Code that must touch guest memory on both sides of an <c>await</c> uses the space's one-call
/// accessors (<see cref="VmSpace.TryRead{T}"/>, <see cref="VmSpace.Read(ulong, Span{byte})"/>,
/// <see cref="VmSpace.Gather"/>, the atomics), which are bound to the space and need no
/// activation, or activates again after the <c>await</c>. A space activated without a scope
/// before an <c>await</c> (the return value ignored) stays active on the thread that activated
/// it, not on the one the continuation runs on, whose readers and writers are refused with
/// <see cref="UVmError.AccessDenied"/>.</para>
/// <para><b>Nesting.</b> Scopes nest and are disposed in reverse order, as <c>using</c> does.
/// Disposing a scope while one made after it on the same thread is still open throws
/// <see cref="InvalidOperationException"/> and changes nothing; an <c>Activate</c> whose scope
/// was ignored counts as open for good, so it must not be made inside a scope that is to be
/// disposed (use another scope, or <see cref="VmSpace.Deactivate"/>, which only clears what is
/// active and leaves scopes alone). Disposing a scope again once it is closed does nothing.
/// A <c>default</c> scope does nothing.</para>
/// <para><b>Threads.</b> Disposing on a thread other than the one that activated (which only
/// unsafe code can arrange, the scope living on that thread's stack) throws
/// <see cref="InvalidOperationException"/> and changes nothing on either thread.</para>
/// <para>Disposing the activated space itself deactivates it on the thread that disposes it; its
/// scope still restores what was active before it.</para>
/// </remarks>
public readonly ref struct VmActivation
{
    private readonly ThreadAccess? _thread;
    private readonly IFaultResolver? _previous;
    private readonly long _number, _previousNumber;

    private VmActivation(ThreadAccess thread, IFaultResolver? previous, long number, long previousNumber)
    {
        _thread = thread;
        _previous = previous;
        _number = number;
        _previousNumber = previousNumber;
    }

    /// <summary>Activates <paramref name="space"/> on the thread whose state is <paramref name="thread"/> (the calling thread's).</summary>
    internal static VmActivation Begin(ThreadAccess thread, VmSpace space)
    {
        var scope = new VmActivation(thread, thread.Active, ++thread.ActivationsIssued, thread.ActivationScope);
        thread.Active = space;
        thread.ActivationScope = scope._number;
        return scope;
    }

    /// <summary>
    /// Makes active again what was active on the thread when this scope was made, if it is the
    /// innermost scope open on the thread; does nothing if it is closed already or is a
    /// <c>default</c> scope.
    /// </summary>
    /// <exception cref="InvalidOperationException">Called on another thread than the one that activated, or while a
    /// scope made after this one on the thread is still open. Nothing changes.</exception>
    public void Dispose()
    {
        if (_thread is null) return;
        if (!ReferenceEquals(ThreadAccess.Current, _thread))
            throw new InvalidOperationException("an activation scope was disposed on another thread than the one that activated the space " +
                "(a continuation after await?): activation belongs to a thread; use the space's one-call accessors across await");
        long innermost = _thread.ActivationScope;
        if (_number > innermost) return; // closed already
        if (_number < innermost)
            throw new InvalidOperationException("an activation scope was disposed while an activation made after it on this thread is still open " +
                "(dispose scopes in reverse order; an Activate whose scope was ignored stays open)");
        _thread.Active = _previous;
        _thread.ActivationScope = _previousNumber;
    }
}
