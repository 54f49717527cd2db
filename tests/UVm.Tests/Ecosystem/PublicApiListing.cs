using System.Globalization;
using System.Reflection;
using System.Runtime.CompilerServices;
using System.Text;

namespace UVm.Tests.Ecosystem;

/// <summary>
/// Writes the public API of an assembly as text, by reflection: one block per public type
/// (sorted by full name) with its declaration line, then one line per visible member (sorted),
/// each a full C#-like signature with nullability, tuple names, ref kinds and defaults.
/// </summary>
/// <remarks>
/// Members visible from outside: public ones, and protected ones of types that can be derived
/// from. Compiler-generated members (names starting with <c>&lt;</c>) and accessors are left out;
/// accessors show in their property. Enum values show with their numbers, constants with values.
/// </remarks>
internal static class PublicApiListing
{
    private const BindingFlags Declared = BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Instance | BindingFlags.Static | BindingFlags.DeclaredOnly;

    private static readonly Dictionary<Type, string> s_keywords = new()
    {
        [typeof(void)] = "void", [typeof(bool)] = "bool", [typeof(byte)] = "byte", [typeof(sbyte)] = "sbyte",
        [typeof(short)] = "short", [typeof(ushort)] = "ushort", [typeof(int)] = "int", [typeof(uint)] = "uint",
        [typeof(long)] = "long", [typeof(ulong)] = "ulong", [typeof(char)] = "char", [typeof(float)] = "float",
        [typeof(double)] = "double", [typeof(decimal)] = "decimal", [typeof(string)] = "string", [typeof(object)] = "object",
        [typeof(nint)] = "nint", [typeof(nuint)] = "nuint",
    };

    /// <summary>The listing of <paramref name="assembly"/>, lines ending with <c>\n</c>.</summary>
    internal static string Generate(Assembly assembly, string header)
    {
        var text = new StringBuilder();
        text.Append(header).Append('\n');
        foreach (Type type in assembly.GetExportedTypes().OrderBy(t => FullName(t), StringComparer.Ordinal))
        {
            text.Append('\n').Append(TypeLine(type)).Append('\n');
            // By member name (constructors first), then by signature.
            foreach (string member in Members(type).Distinct()
                         .OrderBy(m => m.Name == ".ctor" ? "" : m.Name, StringComparer.Ordinal).ThenBy(m => m.Line, StringComparer.Ordinal)
                         .Select(m => m.Line))
                text.Append("  ").Append(member).Append('\n');
        }
        return text.ToString();
    }

    // ---- types --------------------------------------------------------------------------------

    private static string TypeLine(Type t)
    {
        var parts = new List<string> { t.IsNestedFamily || t.IsNestedFamORAssem ? "protected" : "public" };
        if (t.IsEnum)
        {
            string flags = t.IsDefined(typeof(FlagsAttribute)) ? "[Flags] " : "";
            return $"{flags}public enum {FullName(t)} : {Name(Enum.GetUnderlyingType(t))}";
        }
        if (typeof(Delegate).IsAssignableFrom(t.BaseType) && t != typeof(MulticastDelegate))
        {
            MethodInfo invoke = t.GetMethod("Invoke")!;
            return $"public delegate {ReturnType(invoke)} {FullName(t)}{GenericParams(t)}({Params(invoke)}){Constraints(t.GetGenericArguments())}";
        }
        if (t.IsInterface) parts.Add("interface");
        else if (t.IsValueType)
        {
            if (IsReadOnly(t)) parts.Add("readonly");
            if (t.IsByRefLike) parts.Add("ref");
            parts.Add(IsRecord(t) ? "record struct" : "struct");
        }
        else
        {
            if (t.IsAbstract && t.IsSealed) parts.Add("static");
            else if (t.IsAbstract) parts.Add("abstract");
            else if (t.IsSealed) parts.Add("sealed");
            parts.Add(IsRecord(t) ? "record" : "class");
        }
        var bases = new List<string>();
        if (t.IsClass && t.BaseType is { } b && b != typeof(object)) bases.Add(Name(b));
        bases.AddRange(t.GetInterfaces().Where(i => i.IsVisible).Select(i => Name(i)).OrderBy(n => n, StringComparer.Ordinal));
        string line = $"{string.Join(' ', parts)} {FullName(t)}{GenericParams(t)}";
        if (bases.Count > 0) line += " : " + string.Join(", ", bases);
        return line + Constraints(t.IsGenericTypeDefinition ? t.GetGenericArguments() : []);
    }

    private static bool IsRecord(Type t) =>
        t.GetMethod("<Clone>$", Declared) is not null || (t.IsValueType && t.GetMethod("PrintMembers", Declared) is not null);

    private static bool IsReadOnly(ICustomAttributeProvider p) =>
        p.GetCustomAttributes(false).Any(a => a.GetType().FullName == "System.Runtime.CompilerServices.IsReadOnlyAttribute");

    private static bool Has(ICustomAttributeProvider p, string fullName) =>
        p.GetCustomAttributes(false).Any(a => a.GetType().FullName == fullName);

    // ---- members ------------------------------------------------------------------------------

    private static IEnumerable<(string Name, string Line)> Members(Type t)
    {
        if (typeof(Delegate).IsAssignableFrom(t.BaseType)) yield break;
        var nullability = new NullabilityInfoContext();
        bool derivable = !t.IsSealed && !t.IsValueType;
        bool Visible(MethodBase? m) => m is not null && (m.IsPublic || (derivable && (m.IsFamily || m.IsFamilyOrAssembly)));
        string Access(MethodBase m) => t.IsInterface ? "" : m.IsPublic ? "public " : "protected ";

        if (t.IsEnum)
        {
            foreach (FieldInfo f in t.GetFields(BindingFlags.Public | BindingFlags.Static))
                // Enum values sort by number, as they are declared.
                yield return (Convert.ToDecimal(f.GetRawConstantValue(), CultureInfo.InvariantCulture).ToString("000000000000000000000", CultureInfo.InvariantCulture), $"{f.Name} = {Convert.ToString(f.GetRawConstantValue(), CultureInfo.InvariantCulture)}");
            yield break;
        }
        foreach (ConstructorInfo c in t.GetConstructors(Declared))
        {
            if (!Visible(c) || c.IsStatic) continue;
            yield return (".ctor", $"{Access(c)}{ShortName(t)}({Params(c)})");
        }
        foreach (MethodInfo m in t.GetMethods(Declared))
        {
            if (!Visible(m) || m.Name.StartsWith('<')) continue;
            if (m.IsSpecialName && !m.Name.StartsWith("op_", StringComparison.Ordinal)) continue;
            string ro = IsReadOnly(m) ? "readonly " : "";
            yield return (m.Name, $"{Access(m)}{Modifiers(m, t)}{ro}{ReturnType(m)} {m.Name}{GenericParams(m)}({Params(m)}){Constraints(m.IsGenericMethodDefinition ? m.GetGenericArguments() : [])}");
        }
        foreach (PropertyInfo p in t.GetProperties(Declared))
        {
            MethodInfo? get = Visible(p.GetMethod) ? p.GetMethod : null, set = Visible(p.SetMethod) ? p.SetMethod : null;
            MethodInfo? any = get ?? set;
            if (any is null || p.Name.StartsWith('<')) continue;
            string accessors = (get is null ? "" : AccessorText(get, any, "get", t)) + (set is null ? "" : AccessorText(set, any, IsInit(set) ? "init" : "set", t));
            string name = p.GetIndexParameters().Length > 0 ? $"this[{Params(p.GetIndexParameters(), extension: false)}]" : p.Name;
            string type = (p.PropertyType.IsByRef ? "ref " : "") + Name(p.PropertyType.IsByRef ? p.PropertyType.GetElementType()! : p.PropertyType, nullability.Create(p), TupleNames(p));
            string ro = get is not null && IsReadOnly(get) ? "readonly " : "";
            yield return (p.Name, $"{Access(any)}{Modifiers(any, t)}{ro}{type} {name} {{ {accessors}}}");
        }
        foreach (FieldInfo f in t.GetFields(Declared))
        {
            if (!(f.IsPublic || (derivable && (f.IsFamily || f.IsFamilyOrAssembly))) || f.Name.StartsWith('<')) continue;
            string access = f.IsPublic ? "public" : "protected";
            string type = Name(f.FieldType, nullability.Create(f), TupleNames(f));
            if (f.IsLiteral) yield return (f.Name, $"{access} const {type} {f.Name} = {Literal(f.GetRawConstantValue())}");
            else yield return (f.Name, $"{access} {(f.IsStatic ? "static " : "")}{(f.IsInitOnly ? "readonly " : "")}{type} {f.Name}");
        }
        foreach (EventInfo e in t.GetEvents(Declared))
        {
            if (!Visible(e.AddMethod)) continue;
            yield return (e.Name, $"{Access(e.AddMethod!)}{Modifiers(e.AddMethod!, t)}event {Name(e.EventHandlerType!, nullability.Create(e), TupleNames(e))} {e.Name}");
        }
    }

    private static string AccessorText(MethodInfo accessor, MethodInfo property, string word, Type t)
    {
        string access = accessor.IsPublic == property.IsPublic || t.IsInterface ? "" : accessor.IsPublic ? "public " : "protected ";
        return $"{access}{word}; ";
    }

    private static bool IsInit(MethodInfo set) =>
        set.ReturnParameter.GetRequiredCustomModifiers().Any(m => m.FullName == "System.Runtime.CompilerServices.IsExternalInit");

    private static string Modifiers(MethodInfo m, Type t)
    {
        if (t.IsInterface) return m.IsStatic ? "static " : "";
        if (m.IsStatic) return "static ";
        if (m.IsAbstract) return "abstract ";
        if (!m.IsVirtual || (m.IsFinal && m.Attributes.HasFlag(MethodAttributes.NewSlot))) return ""; // plain, or an implicit interface implementation
        bool overrides = m.GetBaseDefinition() != m;
        if (overrides) return m.IsFinal ? "sealed override " : "override ";
        return "virtual ";
    }

    // ---- signatures ---------------------------------------------------------------------------

    private static string ReturnType(MethodInfo m)
    {
        ParameterInfo r = m.ReturnParameter;
        Type type = r.ParameterType;
        string prefix = "";
        if (type.IsByRef)
        {
            prefix = IsReadOnly(r) ? "ref readonly " : "ref ";
            type = type.GetElementType()!;
        }
        return prefix + Name(type, new NullabilityInfoContext().Create(r), TupleNames(r));
    }

    private static string Params(MethodBase m) => Params(m.GetParameters(), m.IsDefined(typeof(ExtensionAttribute), false));

    private static string Params(ParameterInfo[] ps, bool extension)
    {
        var nullability = new NullabilityInfoContext();
        var parts = new List<string>();
        foreach (ParameterInfo p in ps)
        {
            var s = new StringBuilder();
            if (extension && p.Position == 0) s.Append("this ");
            if (Has(p, "System.Runtime.CompilerServices.ScopedRefAttribute")) s.Append("scoped ");
            if (p.IsDefined(typeof(ParamArrayAttribute), false)) s.Append("params ");
            Type type = p.ParameterType;
            if (type.IsByRef)
            {
                if (p.IsOut) s.Append("out ");
                else if (Has(p, "System.Runtime.CompilerServices.RequiresLocationAttribute")) s.Append("ref readonly ");
                else if (p.IsIn) s.Append("in ");
                else s.Append("ref ");
                type = type.GetElementType()!;
            }
            s.Append(Name(type, nullability.Create(p), TupleNames(p))).Append(' ').Append(p.Name);
            if (p.HasDefaultValue) s.Append(" = ").Append(p.DefaultValue is null && type.IsValueType && Nullable.GetUnderlyingType(type) is null ? "default" : Literal(p.DefaultValue, type));
            parts.Add(s.ToString());
        }
        return string.Join(", ", parts);
    }

    private static string Literal(object? value, Type? type = null)
    {
        if (value is null) return "null";
        if (type is not null && (type.IsEnum || Nullable.GetUnderlyingType(type)?.IsEnum == true))
        {
            Type e = Nullable.GetUnderlyingType(type) ?? type;
            return $"{Name(e)}.{Enum.ToObject(e, value)}";
        }
        return value switch
        {
            string s => $"\"{s}\"",
            char c => $"'{c}'",
            bool b => b ? "true" : "false",
            IFormattable f => f.ToString(null, CultureInfo.InvariantCulture),
            _ => value.ToString() ?? "",
        };
    }

    private static string GenericParams(Type t) =>
        t.IsGenericTypeDefinition ? $"<{string.Join(", ", t.GetGenericArguments().Skip(t.DeclaringType?.GetGenericArguments().Length ?? 0).Select(a => a.Name))}>" : "";

    private static string GenericParams(MethodInfo m) =>
        m.IsGenericMethodDefinition ? $"<{string.Join(", ", m.GetGenericArguments().Select(a => a.Name))}>" : "";

    private static string Constraints(Type[] args)
    {
        var text = new StringBuilder();
        foreach (Type a in args)
        {
            var cs = new List<string>();
            GenericParameterAttributes g = a.GenericParameterAttributes;
            bool isStruct = g.HasFlag(GenericParameterAttributes.NotNullableValueTypeConstraint);
            if (g.HasFlag(GenericParameterAttributes.ReferenceTypeConstraint)) cs.Add("class");
            if (isStruct) cs.Add(Has(a, "System.Runtime.CompilerServices.IsUnmanagedAttribute") ? "unmanaged" : "struct");
            cs.AddRange(a.GetGenericParameterConstraints().Where(c => c != typeof(ValueType)).Select(c => Name(c)).OrderBy(n => n, StringComparer.Ordinal));
            if (g.HasFlag(GenericParameterAttributes.DefaultConstructorConstraint) && !isStruct) cs.Add("new()");
            if (((int)g & 0x20) != 0) cs.Add("allows ref struct");
            if (cs.Count > 0) text.Append($" where {a.Name} : {string.Join(", ", cs)}");
        }
        return text.ToString();
    }

    private static List<string?> TupleNames(ICustomAttributeProvider p) =>
        p.GetCustomAttributes(typeof(TupleElementNamesAttribute), false).OfType<TupleElementNamesAttribute>().FirstOrDefault()?.TransformNames.ToList() ?? [];

    /// <summary>A C# spelling of <paramref name="t"/>; <paramref name="tupleNames"/> are consumed in pre-order, as the compiler encodes them.</summary>
    private static string Name(Type t, NullabilityInfo? n = null, List<string?>? tupleNames = null)
    {
        int position = 0;
        return NameAt(t, n, tupleNames ?? [], ref position);
    }

    private static string NameAt(Type t, NullabilityInfo? n, List<string?> names, ref int position)
    {
        if (t.IsPointer) return NameAt(t.GetElementType()!, null, names, ref position) + "*";
        if (t.IsArray) return NameAt(t.GetElementType()!, n?.ElementType, names, ref position) + "[]" + Question(t, n);
        if (t.IsGenericParameter) return t.Name + (n is { ReadState: NullabilityState.Nullable } && !t.IsValueType ? "?" : "");
        if (Nullable.GetUnderlyingType(t) is { } inner)
            return NameAt(inner, n?.GenericTypeArguments.FirstOrDefault(), names, ref position) + "?";
        if (s_keywords.TryGetValue(t, out string? keyword)) return keyword + Question(t, n);
        Type[] args = t.GetGenericArguments();
        if (t.IsGenericType && t.FullName?.StartsWith("System.ValueTuple`", StringComparison.Ordinal) == true && args.Length <= 7)
        {
            int first = position;
            position += args.Length;
            var parts = new List<string>();
            for (int i = 0; i < args.Length; i++)
            {
                string element = NameAt(args[i], n?.GenericTypeArguments.ElementAtOrDefault(i), names, ref position);
                string? name = first + i < names.Count ? names[first + i] : null;
                parts.Add(name is null ? element : $"{element} {name}");
            }
            return $"({string.Join(", ", parts)})";
        }
        string baseName = FullName(t.IsGenericType ? t.GetGenericTypeDefinition() : t);
        if (!t.IsGenericType || t.IsGenericTypeDefinition) return baseName + (t.IsGenericTypeDefinition ? GenericParams(t) : "") + Question(t, n);
        var argNames = new List<string>();
        for (int i = 0; i < args.Length; i++) argNames.Add(NameAt(args[i], n?.GenericTypeArguments.ElementAtOrDefault(i), names, ref position));
        return $"{baseName}<{string.Join(", ", argNames)}>{Question(t, n)}";
    }

    private static string Question(Type t, NullabilityInfo? n) => !t.IsValueType && n is { ReadState: NullabilityState.Nullable } ? "?" : "";

    /// <summary>Namespace-qualified name, nested types joined with a dot, generic arity removed.</summary>
    private static string FullName(Type t)
    {
        string name = ShortName(t);
        return t.DeclaringType is { } outer ? $"{FullName(outer)}.{name}" : string.IsNullOrEmpty(t.Namespace) ? name : $"{t.Namespace}.{name}";
    }

    private static string ShortName(Type t)
    {
        int tick = t.Name.IndexOf('`');
        return tick < 0 ? t.Name : t.Name[..tick];
    }
}
