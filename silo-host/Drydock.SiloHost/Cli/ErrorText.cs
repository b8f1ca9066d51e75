namespace Drydock.SiloHost.Cli;

/// <summary>The text a failed command prints after <c>drydock: error:</c>.</summary>
internal static class ErrorText
{
    /// <summary>
    /// The exception's message; for an <see cref="ArgumentException"/> without what .NET appends for programmers
    /// (" (Parameter 'name')" and, for an <see cref="ArgumentOutOfRangeException"/>, "Actual value was …").
    /// </summary>
    /// <param name="exception">The failure.</param>
    /// <returns>One line for the user.</returns>
    public static string Of(Exception exception)
    {
        var message = exception.Message;
        if (exception is ArgumentException { ParamName: { Length: > 0 } name })
        {
            // ArgumentException.Message is "<message> (Parameter '<name>')[\nActual value was <value>.]".
            var suffix = message.IndexOf($" (Parameter '{name}')", StringComparison.Ordinal);
            if (suffix > 0)
            {
                message = message[..suffix];
            }
        }

        return message;
    }
}
