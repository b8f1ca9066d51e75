using Drydock.SiloHost.Cli;

// Composition root: parse the command line and run the chosen command.
return await DrydockCli.RunAsync(args, Console.Out, Console.Error);
