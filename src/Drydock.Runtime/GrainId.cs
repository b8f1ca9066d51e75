namespace Drydock.Runtime;

/// <summary>
/// The identity of a grain: its kind (which handler runs it) and its key within that kind
/// (a domain UUID, a job id, a hypervisor name). Grains, inboxes and results are keyed by it.
/// </summary>
public readonly record struct GrainId
{
    /// <summary>Longest kind accepted, in characters.</summary>
    public const int MaxKindLength = 64;

    /// <summary>Longest key accepted, in characters.</summary>
    public const int MaxKeyLength = 256;

    /// <summary>Creates a grain id after checking both parts.</summary>
    /// <exception cref="ArgumentException">The kind or key is empty, too long, or the kind has characters other than [a-z0-9._-].</exception>
    public GrainId(string kind, string key)
    {
        ArgumentException.ThrowIfNullOrEmpty(kind);
        ArgumentException.ThrowIfNullOrEmpty(key);
        if (kind.Length > MaxKindLength)
        {
            throw new ArgumentException($"A grain kind has at most {MaxKindLength} characters.", nameof(kind));
        }

        if (key.Length > MaxKeyLength)
        {
            throw new ArgumentException($"A grain key has at most {MaxKeyLength} characters.", nameof(key));
        }

        foreach (var c in kind)
        {
            if (!(c is (>= 'a' and <= 'z') or (>= '0' and <= '9') or '.' or '_' or '-'))
            {
                throw new ArgumentException("A grain kind uses only lower-case letters, digits, '.', '_' and '-'.", nameof(kind));
            }
        }

        Kind = kind;
        Key = key;
    }

    /// <summary>The grain's kind: the name its handler is registered under.</summary>
    public string Kind { get; }

    /// <summary>The grain's key within its kind.</summary>
    public string Key { get; }

    /// <inheritdoc/>
    public override string ToString() => $"{Kind}/{Key}";
}
