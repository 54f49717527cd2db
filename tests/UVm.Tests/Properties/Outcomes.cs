using NUnit.Framework;

namespace UVm.Tests.Properties;

/// <summary>What one call did: returned a value, or threw.</summary>
public readonly struct Outcome<T>
{
    private Outcome(T? value, Exception? error)
    {
        Value = value;
        Error = error;
    }

    public T? Value { get; }
    public Exception? Error { get; }
    public bool Threw => Error != null;

    /// <summary>For calls that cannot go through a lambda (a ref struct receiver): the call returned <paramref name="value"/>.</summary>
    public static Outcome<T> Returned(T value) => new(value, null);

    /// <summary>The call threw <paramref name="e"/>.</summary>
    public static Outcome<T> Failed(Exception e) => new(default, e);

    public override string ToString() => Error switch
    {
        null => $"returned {Describe(Value)}",
        UVmException u => $"threw UVmException({u.Error}): {u.Message}",
        _ => $"threw {Error.GetType().Name}: {Error.Message}",
    };

    private static string Describe(object? v) => v switch
    {
        null => "null",
        ulong u => Extremes.Hex(u),
        _ => v.ToString() ?? "?",
    };
}

/// <summary>Runs a call and captures its outcome (every exception but a test's own assertion).</summary>
public static class Run
{
    public static Outcome<T> Of<T>(Func<T> call)
    {
        try
        {
            return Outcome<T>.Returned(call());
        }
        catch (Exception e) when (e is not AssertionException and not IgnoreException)
        {
            return Outcome<T>.Failed(e);
        }
    }

    public static Outcome<bool> Of(Action call) => Of(() =>
    {
        call();
        return true;
    });
}

/// <summary>
/// The documented contract of one call for the inputs of one case: which exceptions the
/// member's XML doc (its <c>&lt;exception&gt;</c> tags, and the <see cref="UVmError"/> codes they
/// name) calls for, given which documented conditions the inputs meet.
/// </summary>
/// <remarks>
/// <para>Every condition that holds is a documented refusal; when several hold at once (several
/// arguments out of range) any of their exceptions is right, since the docs give no order.
/// When none holds the call must succeed, but for refusals the docs allow without the caller
/// being able to rule them out (the host refusing memory): those are <see cref="MayRefuse{TException}"/>.</para>
/// <para>An exception type matches its subclasses, as .NET docs read (<see cref="ArgumentException"/>
/// covers <see cref="ArgumentOutOfRangeException"/>); a <see cref="UVmError"/> must match exactly.</para>
/// </remarks>
public sealed class Contract
{
    private readonly string _call;
    private readonly List<(string Exception, Func<Exception, bool> Match, string Why)> _required = new();
    private readonly List<(string Exception, Func<Exception, bool> Match, string Why)> _allowed = new();

    private Contract(string call) => _call = call;

    /// <summary>The contract of <paramref name="call"/> (the member and its inputs, for messages).</summary>
    public static Contract For(string call) => new(call);

    /// <summary><typeparamref name="TException"/> is documented for inputs where <paramref name="when"/> holds.</summary>
    public Contract Refuses<TException>(bool when, string why) where TException : Exception
    {
        if (when) _required.Add((typeof(TException).Name, e => e is TException, why));
        return this;
    }

    /// <summary><see cref="UVmException"/> with <paramref name="code"/> is documented for inputs where <paramref name="when"/> holds.</summary>
    public Contract Refuses(UVmError code, bool when, string why)
    {
        if (when) _required.Add(($"UVmException({code})", e => e is UVmException u && u.Error == code, why));
        return this;
    }

    /// <summary><typeparamref name="TException"/> is documented and may happen where <paramref name="when"/> holds, but is not required.</summary>
    public Contract MayRefuse<TException>(bool when, string why) where TException : Exception
    {
        if (when) _allowed.Add((typeof(TException).Name, e => e is TException, why));
        return this;
    }

    /// <summary><see cref="UVmException"/> with <paramref name="code"/> may happen (and is documented) where <paramref name="when"/> holds.</summary>
    public Contract MayRefuse(UVmError code, bool when, string why)
    {
        if (when) _allowed.Add(($"UVmException({code})", e => e is UVmException u && u.Error == code, why));
        return this;
    }

    /// <summary>Whether the inputs call for a refusal.</summary>
    public bool MustRefuse => _required.Count > 0;

    /// <summary>
    /// Asserts that <paramref name="outcome"/> is right for the contract; returns whether the
    /// call succeeded (so the caller goes on to check the result).
    /// </summary>
    public bool Verify<T>(Outcome<T> outcome)
    {
        if (outcome.Error is { } e)
        {
            if (_required.Any(r => r.Match(e)) || _allowed.Any(a => a.Match(e))) return false;
            Fail(_required.Count == 0 ? "threw for inputs it must accept" : "threw an exception its docs do not give for these inputs", outcome);
        }
        if (_required.Count > 0) Fail("accepted inputs its docs refuse", outcome);
        return true;
    }

    /// <summary>Asserts that <paramref name="outcome"/> succeeded (for calls whose docs name no exception for these inputs).</summary>
    public static T MustSucceed<T>(string call, Outcome<T> outcome)
    {
        if (outcome.Threw) throw new AssertionException($"{call}: threw, and its docs name no exception for these inputs; outcome: {outcome}");
        return outcome.Value!;
    }

    private void Fail<T>(string problem, Outcome<T> outcome)
    {
        string required = _required.Count == 0 ? "success" : string.Join("; ", _required.Select(r => $"{r.Exception} ({r.Why})"));
        string allowed = _allowed.Count == 0 ? "" : "; also allowed: " + string.Join("; ", _allowed.Select(a => $"{a.Exception} ({a.Why})"));
        throw new AssertionException($"{_call}: {problem}.{Environment.NewLine}  outcome: {outcome}{Environment.NewLine}  documented for these inputs: {required}{allowed}");
    }
}

/// <summary>Assertions with the case's description in every message.</summary>
public static class Expect
{
    public static void That(bool condition, string call, string what)
    {
        if (!condition) throw new AssertionException($"{call}: {what}");
    }

    public static void Equal<T>(T actual, T expected, string call, string what)
    {
        if (!EqualityComparer<T>.Default.Equals(actual, expected))
            throw new AssertionException($"{call}: {what}: expected {Show(expected)}, got {Show(actual)}");
    }

    private static string Show<T>(T v) => v is ulong u ? Extremes.Hex(u) : v?.ToString() ?? "null";
}
