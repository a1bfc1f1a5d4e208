import { mount } from 'svelte';
import Demo from './Demo.svelte';
import { readConfig } from './config.js';
import './demo.css';

mount(Demo, { target: document.getElementById('app'), props: readConfig(location, document) });
