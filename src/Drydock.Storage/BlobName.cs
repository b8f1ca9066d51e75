namespace Drydock.Storage;

/// <summary>Object name rules shared by every store.</summary>
/// <remarks>
/// A name is 1..1024 characters of <c>[A-Za-z0-9._-]</c> in segments separated by single <c>/</c>; no segment is
/// empty, <c>.</c> or <c>..</c>, and no segment starts with <c>.</c> (the filesystem store keeps its temp files
/// under dot-names). These names are the same on every backend, need no escaping in URLs, and cannot escape a
/// directory.
/// </remarks>
public static class BlobName
{
    /// <summary>The longest name accepted.</summary>
    public const int MaxLength = 1024;

    /// <summary>Whether <paramref name="name"/> follows the rules.</summary>
    /// <param name="name">The candidate.</param>
    /// <returns><see langword="true"/> if it is a valid object name.</returns>
    public static bool IsValid(string name) => IsValidCore(name, allowEmpty: false, allowTrailingSlash: false);

    /// <summary>Throws <see cref="ArgumentException"/> unless <paramref name="name"/> is a valid object name.</summary>
    /// <param name="name">The candidate.</param>
    public static void Validate(string name)
    {
        if (!IsValid(name))
        {
            throw new ArgumentException($"'{name}' is not a valid object name (segments of [A-Za-z0-9._-], separated by '/').", nameof(name));
        }
    }

    /// <summary>Throws <see cref="ArgumentException"/> unless <paramref name="prefix"/> is empty or a valid name prefix.</summary>
    /// <param name="prefix">The candidate prefix; a trailing <c>/</c> is allowed.</param>
    public static void ValidatePrefix(string prefix)
    {
        if (!IsValidCore(prefix, allowEmpty: true, allowTrailingSlash: true))
        {
            throw new ArgumentException($"'{prefix}' is not a valid name prefix.", nameof(prefix));
        }
    }

    private static bool IsValidCore(string name, bool allowEmpty, bool allowTrailingSlash)
    {
        if (name.Length == 0)
        {
            return allowEmpty;
        }

        if (name.Length > MaxLength)
        {
            return false;
        }

        var segmentStart = 0;
        for (var i = 0; i <= name.Length; i++)
        {
            if (i == name.Length || name[i] == '/')
            {
                var length = i - segmentStart;
                if (length == 0)
                {
                    // Only a trailing slash of a prefix may end in an empty segment.
                    if (!(allowTrailingSlash && i == name.Length && i > 0))
                    {
                        return false;
                    }
                }
                else if (name[segmentStart] == '.')
                {
                    return false;
                }

                segmentStart = i + 1;
                continue;
            }

            var c = name[i];
            var ok = c is (>= 'a' and <= 'z') or (>= 'A' and <= 'Z') or (>= '0' and <= '9') or '.' or '_' or '-';
            if (!ok)
            {
                return false;
            }
        }

        return true;
    }
}
